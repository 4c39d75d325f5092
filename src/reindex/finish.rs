//! Finishing a job: refresh the target, verify the counts (documents counted in the source at
//! the start = read = written + failed) and move the alias to the target in one atomic
//! `_aliases` call; the old index stays until deleted.

use axum::http::Method;
use serde_json::{json, Value};

use super::*;
use crate::engine::path::EnginePath;
use crate::engine::EngineRequest;
use crate::ingest::catalog::CatalogError;
use crate::types::name::IndexName;

impl Reindexer {
    /// Verifies the counts and moves the alias.
    pub(super) async fn finish(&self, control: &JobControl) -> Result<(), ReindexError> {
        let s = control.live.lock().expect("job state lock").clone();
        self.engine
            .send(
                EngineRequest::new(Method::POST, EnginePath::at_index(&s.spec.target)?.api("_refresh").build())
                    .idempotent(true),
            )
            .await?;
        let (read, written, failed) = (s.total(|x| x.read), s.total(|x| x.written), s.total(|x| x.failed));
        if read != written + failed || read != s.source_count {
            return Err(ReindexError::Failed(format!(
                "counts do not add up: source {} at the start, read {read}, written {written}, failed {failed}; the alias was not moved",
                s.source_count
            )));
        }
        let mut swapped = false;
        if let Some(alias) = &s.spec.alias {
            self.swap_alias(alias, &s.spec.target).await?;
            swapped = true;
        }
        self.store_owner(&s.spec).await?;
        self.checkpoint(control, |x| {
            x.status = Status::Done;
            x.alias_swapped = swapped;
        })
        .await
    }

    /// Stores the job's pipeline owning the alias, so that reads and writes through it are
    /// embedded by every replica from its next poll of the pipeline store (this one at once).
    /// Without an alias, a job that carried a definition (or whose pipeline was not stored)
    /// stores it owning the target; a plain copy of a stored pipeline's data leaves it alone. A
    /// fixed pipeline set (no store) is left as it is.
    async fn store_owner(&self, spec: &JobSpec) -> Result<(), ReindexError> {
        let catalog = self.owners.catalog();
        if !catalog.is_stored() {
            return Ok(());
        }
        let mut p = (*self.job_pipeline(spec)?).clone();
        match &spec.alias {
            Some(alias) => p.index = alias.clone(),
            // a copy of a stored pipeline's data without an alias: the pipeline stays where it is
            None if spec.definition.is_none()
                && catalog.fetch(&p.name).await.map_err(|e| ReindexError::Failed(e.to_string()))?.is_some() =>
            {
                return Ok(());
            }
            None => p.index = spec.target.clone(),
        }
        let fail = |e: CatalogError| {
            ReindexError::Failed(format!(
                "the data is in `{}` but storing pipeline `{}` failed: {e}",
                spec.target, p.name
            ))
        };
        for attempt in 0..3 {
            let current = catalog.fetch(&p.name).await.map_err(fail)?;
            if current.as_ref().is_some_and(|c| *c.pipeline == p) {
                break;
            }
            match catalog.write(&p, current.map(|c| (c.seq_no, c.primary_term))).await {
                Ok(_) => {
                    tracing::info!(pipeline = %p.name, index = %p.index, "pipeline stored owning the job's result");
                    break;
                }
                Err(CatalogError::Conflict(_)) if attempt < 2 => continue,
                Err(e) => return Err(fail(e)),
            }
        }
        self.owners.invalidate();
        Ok(())
    }

    /// Points `alias` at `target` alone, in one `_aliases` call.
    pub async fn swap_alias(&self, alias: &str, target: &str) -> Result<(), ReindexError> {
        let path = EnginePath::root().api("_alias").index(&IndexName::try_from(alias)?).build();
        let r = self.engine.send(EngineRequest::new(Method::GET, path).passthrough()).await?;
        let mut actions = Vec::new();
        if r.status.is_success() {
            let v: Value = r.json()?;
            for index in v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                if index != target {
                    actions.push(json!({"remove": {"index": index, "alias": alias}}));
                }
            }
        } else if self.exists(alias).await? {
            return Err(ReindexError::Invalid(format!(
                "`{alias}` is an index, not an alias: it cannot be moved to `{target}`"
            )));
        }
        actions.push(json!({"add": {"index": target, "alias": alias}}));
        self.engine.send(EngineRequest::new(Method::POST, "/_aliases").json(&json!({"actions": actions}))).await?;
        self.owners.invalidate();
        tracing::info!(%alias, %target, "alias moved");
        Ok(())
    }
}
