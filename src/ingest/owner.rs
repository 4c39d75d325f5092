//! One answer to "which pipeline owns this name", for every route: bulk items, `_doc`,
//! `_create`, `_update`, `_search`, `_msearch`, `/search` and the passthrough's refusals.
//!
//! A pipeline owns the concrete indices its `index` names: the index itself, every index of an
//! alias, every backing index of a data stream. A request's name is resolved the same way on the
//! engine (`GET /_resolve/index/{name}`, which also expands comma lists, wildcards and date math):
//! - a **write** goes to one place: a concrete index, an alias's write index, a data stream (its
//!   newest backing index), or the concrete index date math names; its owner is that index's;
//! - a **read** reaches every index the name expands to; it has an owner when every one of them
//!   belongs to pipelines that embed queries alike (same query model, vector field and
//!   passages); a read mixing pipeline indices of different models, or pipeline and plain
//!   indices, gets a [`ReadOwner::Conflict`] with the reason (refused where the sidecar would
//!   embed the query, passed on where it would not).
//!
//! A name equal to a pipeline's `index` is that pipeline's even before the index exists (a
//! first write creates it). Resolutions are cached for [`TTL`]; the cache starts over when the
//! pipeline set changes and when the sidecar itself moves an alias ([`Owners::invalidate`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::Value;

use super::catalog::{Catalog, Snapshot};
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineError, EngineRequest};
use crate::types::name::{IndexName, IndexPattern};
use crate::types::pipeline::Pipeline;

/// How long a resolution is trusted (an alias moved by someone else is seen after this).
pub const TTL: Duration = Duration::from_secs(5);
/// Names cached at most; the cache starts over beyond.
const MAX_CACHED: usize = 4096;

/// Where a name leads on the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The concrete indices a read of the name reaches.
    pub indices: BTreeSet<String>,
    /// Where a write of the name goes.
    pub write: Option<WriteTarget>,
}

/// Where a write goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteTarget {
    /// A concrete index (the name itself, an alias's write index, date math's index).
    Index(String),
    /// A data stream (written by its name) and its write index.
    DataStream { name: String, write_index: String },
}

impl WriteTarget {
    /// The concrete index the document lands in.
    pub fn index(&self) -> &str {
        match self {
            WriteTarget::Index(i) => i,
            WriteTarget::DataStream { write_index, .. } => write_index,
        }
    }

    /// The name a request should send the write to.
    pub fn send_to(&self) -> &str {
        match self {
            WriteTarget::Index(i) => i,
            WriteTarget::DataStream { name, .. } => name,
        }
    }
}

/// What `GET /_resolve/index/{name}` (and, for an alias, `GET /_alias/{name}`) says, as a
/// [`Resolution`]. Pure.
pub fn resolution_of(resolved: &Value, alias_answer: Option<&Value>, name: &str) -> Resolution {
    let names = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let list = |k: &str| resolved.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let (indices, aliases, streams) = (list("indices"), list("aliases"), list("data_streams"));
    let mut out = Resolution::default();
    for i in &indices {
        let closed = names(i.get("attributes")).iter().any(|a| a == "closed");
        if let (Some(n), false) = (i["name"].as_str(), closed) {
            out.indices.insert(n.to_string());
        }
    }
    for a in &aliases {
        out.indices.extend(names(a.get("indices")));
    }
    for d in &streams {
        out.indices.extend(names(d.get("backing_indices")));
    }
    let named = |v: &Value| v["name"].as_str() == Some(name);
    out.write = if indices.iter().any(named) {
        Some(WriteTarget::Index(name.to_string()))
    } else if let Some(a) = aliases.iter().find(|a| named(a)) {
        let members = names(a.get("indices"));
        match (members.as_slice(), alias_answer) {
            ([only], _) => Some(WriteTarget::Index(only.clone())),
            (_, Some(answer)) => write_index(answer, name).map(WriteTarget::Index),
            _ => None,
        }
    } else if let Some(d) = streams.iter().find(|d| named(d)) {
        names(d.get("backing_indices"))
            .last()
            .map(|w| WriteTarget::DataStream { name: name.to_string(), write_index: w.clone() })
    } else if name.starts_with('<') && indices.len() == 1 && aliases.is_empty() && streams.is_empty() {
        // date math naming one concrete index
        indices[0]["name"].as_str().map(|n| WriteTarget::Index(n.to_string()))
    } else {
        None
    };
    out
}

/// The concrete indices one name reaches in a `GET /_resolve/index/{a,b,...}` answer for several
/// concrete names (each an index, an alias or a data stream). Pure.
pub fn reach_of(resolved: &Value, name: &str) -> BTreeSet<String> {
    let list = |k: &str| resolved.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let named = |v: &&Value| v["name"].as_str() == Some(name);
    if let Some(i) = list("indices").iter().find(named) {
        let closed = strings(&i["attributes"]).contains("closed");
        return if closed { BTreeSet::new() } else { BTreeSet::from([name.to_string()]) };
    }
    if let Some(a) = list("aliases").iter().find(named) {
        return strings(&a["indices"]);
    }
    list("data_streams").iter().find(named).map(|d| strings(&d["backing_indices"])).unwrap_or_default()
}

/// The index marked `is_write_index` for alias `name` in a `GET /_alias/{name}` answer.
fn write_index(aliases: &Value, name: &str) -> Option<String> {
    let m = aliases.as_object()?;
    m.iter()
        .find(|(_, v)| {
            v.get("aliases").and_then(|a| a.get(name)).and_then(|a| a.get("is_write_index")) == Some(&Value::Bool(true))
        })
        .map(|(k, _)| k.clone())
}

/// The pipeline owning something, as this replica sees it.
#[derive(Clone, Debug)]
pub enum Owner {
    /// No pipeline: the engine's own behaviour.
    Plain,
    Served(Arc<Pipeline>),
    /// Owned by a pipeline this replica cannot serve (a model it has not loaded), with why.
    Unavailable(Arc<Pipeline>, String),
}

impl Owner {
    pub fn pipeline(&self) -> Option<&Arc<Pipeline>> {
        match self {
            Owner::Plain => None,
            Owner::Served(p) | Owner::Unavailable(p, _) => Some(p),
        }
    }

    fn of(snap: &Snapshot, name: &str) -> Owner {
        if let Some(s) = snap.served.get(name) {
            return Owner::Served(s.pipeline.clone());
        }
        match snap.unavailable.get(name) {
            Some((s, why)) => Owner::Unavailable(s.pipeline.clone(), format!("pipeline `{name}` is {why}")),
            None => Owner::Plain,
        }
    }
}

/// Where a write goes and who owns it.
#[derive(Clone, Debug)]
pub struct WriteRoute {
    /// The name to send the write to (a concrete index, or a data stream's name).
    pub target: String,
    pub owner: Owner,
}

/// Who owns what a read reaches.
#[derive(Clone, Debug)]
pub enum ReadOwner {
    Owned(Owner),
    /// Pipeline indices that cannot share one query vector, or pipeline and plain indices: why.
    Conflict(String),
}

/// Whether two pipelines' indices can be searched with one query vector.
fn alike(a: &Pipeline, b: &Pipeline) -> bool {
    let key = |p: &Pipeline| {
        let live = p.live_field();
        (
            p.query_model().to_string(),
            p.field_model(live).to_string(),
            p.fields[live].vector.clone(),
            p.chunking.as_ref().map(|c| c.passages_field.clone()),
        )
    };
    key(a) == key(b)
}

struct Cache {
    generation: u64,
    names: HashMap<String, (Instant, Arc<Resolution>)>,
    /// What each pipeline's `index` reaches (resolved together, many names per engine call).
    reach: HashMap<String, (Instant, BTreeSet<String>)>,
}

/// Longest list of names sent in one `_resolve/index` path (the engines' request line is 4 KiB).
const MAX_RESOLVE_PATH: usize = 3000;

/// The owner resolver of one replica; cheap to share.
pub struct Owners {
    catalog: Arc<Catalog>,
    cache: Mutex<Cache>,
}

impl Owners {
    pub fn new(catalog: Arc<Catalog>) -> Owners {
        Owners { catalog, cache: Mutex::new(Cache { generation: 0, names: HashMap::new(), reach: HashMap::new() }) }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Forgets every resolution (the sidecar moved an alias).
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.names.clear();
            c.reach.clear();
        }
    }

    /// `name` resolved on the engine (cached). A name neither engine accepts resolves to
    /// nothing: the engine refuses the request itself.
    pub async fn resolve(&self, engine: &EngineClient, name: &str) -> Result<Arc<Resolution>, EngineError> {
        let generation = self.catalog.generation();
        {
            let mut c = self.cache.lock().expect("owner cache");
            if c.generation != generation {
                c.names.clear();
                c.reach.clear();
                c.generation = generation;
            }
            if let Some((at, r)) = c.names.get(name) {
                if at.elapsed() < TTL {
                    return Ok(r.clone());
                }
            }
        }
        let r = Arc::new(self.resolve_uncached(engine, name).await?);
        let mut c = self.cache.lock().expect("owner cache");
        if c.names.len() >= MAX_CACHED {
            c.names.clear();
        }
        c.names.insert(name.to_string(), (Instant::now(), r.clone()));
        Ok(r)
    }

    async fn resolve_uncached(&self, engine: &EngineClient, name: &str) -> Result<Resolution, EngineError> {
        let base = EnginePath::root().api("_resolve").api("index");
        let at = if name.starts_with('<') {
            base.date_math(name)
        } else {
            IndexPattern::try_from(name).map(|p| base.pattern(&p))
        };
        let Ok(at) = at else { return Ok(Resolution::default()) };
        // Elasticsearch answers 404 for a whole list when one name does not exist
        let at = at.param("ignore_unavailable", "true");
        let r = engine.send(EngineRequest::new(Method::GET, at.build()).passthrough().idempotent(true)).await?;
        if !r.status.is_success() {
            return Ok(Resolution::default());
        }
        let resolved: Value = r.json()?;
        // an alias over several indices: which one takes writes
        let several = resolved.get("aliases").and_then(Value::as_array).is_some_and(|a| {
            a.iter().any(|x| x["name"].as_str() == Some(name) && x["indices"].as_array().is_some_and(|i| i.len() > 1))
        });
        let alias_answer = match (several, IndexName::try_from(name)) {
            (true, Ok(n)) => {
                let a = engine
                    .send(
                        EngineRequest::new(Method::GET, EnginePath::root().api("_alias").index(&n).build())
                            .passthrough(),
                    )
                    .await?;
                a.status.is_success().then(|| a.json::<Value>()).transpose()?
            }
            _ => None,
        };
        Ok(resolution_of(&resolved, alias_answer.as_ref(), name))
    }

    /// Concrete index → the pipelines owning it (their `index` resolved).
    async fn owned_indices(
        &self,
        engine: &EngineClient,
        snap: &Snapshot,
    ) -> Result<BTreeMap<String, Vec<String>>, EngineError> {
        let names: BTreeSet<String> = snap.all().map(|(s, _)| s.pipeline.index.clone()).collect();
        let reach = self.reach(engine, names).await?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (s, _) in snap.all() {
            let p = &s.pipeline;
            let mut indices = reach.get(&p.index).cloned().unwrap_or_default();
            indices.insert(p.index.clone());
            for i in indices {
                out.entry(i).or_default().push(p.name.clone());
            }
        }
        Ok(out)
    }

    /// What each of `names` (concrete names: indices, aliases, data streams) reaches, from the
    /// cache or from one `_resolve/index` call per [`MAX_RESOLVE_PATH`] bytes of names.
    async fn reach(
        &self,
        engine: &EngineClient,
        names: BTreeSet<String>,
    ) -> Result<HashMap<String, BTreeSet<String>>, EngineError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let c = self.cache.lock().expect("owner cache");
            for n in names {
                match c.reach.get(&n).filter(|(at, _)| at.elapsed() < TTL) {
                    Some((_, r)) => {
                        out.insert(n, r.clone());
                    }
                    None => missing.push(n),
                }
            }
        }
        let mut batches: Vec<Vec<String>> = vec![Vec::new()];
        let mut len = 0;
        for n in missing {
            if len + n.len() + 1 > MAX_RESOLVE_PATH && batches.last().is_some_and(|b| !b.is_empty()) {
                batches.push(Vec::new());
                len = 0;
            }
            len += n.len() + 1;
            batches.last_mut().expect("a batch").push(n);
        }
        for batch in batches.into_iter().filter(|b| !b.is_empty()) {
            let Ok(pattern) = IndexPattern::try_from(batch.join(",").as_str()) else { continue };
            let path = EnginePath::root()
                .api("_resolve")
                .api("index")
                .pattern(&pattern)
                .param("ignore_unavailable", "true")
                .build();
            let r = engine.send(EngineRequest::new(Method::GET, path).passthrough().idempotent(true)).await?;
            let resolved = if r.status.is_success() { r.json::<Value>()? } else { Value::Null };
            let mut c = self.cache.lock().expect("owner cache");
            if c.reach.len() >= MAX_CACHED {
                c.reach.clear();
            }
            for n in batch {
                let reach = reach_of(&resolved, &n);
                c.reach.insert(n.clone(), (Instant::now(), reach.clone()));
                out.insert(n, reach);
            }
        }
        Ok(out)
    }

    /// The owner of one concrete index (or of a name some pipeline's `index` is).
    fn owner_of(snap: &Snapshot, owned: &BTreeMap<String, Vec<String>>, index: &str) -> Result<Owner, String> {
        match owned.get(index).map(Vec::as_slice) {
            None | Some([]) => Ok(Owner::Plain),
            Some([one]) => Ok(Owner::of(snap, one)),
            Some(many) => Err(format!(
                "index `{index}` belongs to several pipelines ({}); give each its own index",
                many.join(", ")
            )),
        }
    }

    /// Where a write to `name` goes and the pipeline that embeds it.
    pub async fn for_write(
        &self,
        engine: &EngineClient,
        name: &str,
    ) -> Result<Result<WriteRoute, String>, EngineError> {
        let snap = self.catalog.snapshot();
        if snap.served.is_empty() && snap.unavailable.is_empty() {
            return Ok(Ok(WriteRoute { target: name.to_string(), owner: Owner::Plain }));
        }
        let exact = snap.all().find(|(s, _)| s.pipeline.index == name).map(|(s, _)| s.pipeline.name.clone());
        let r = self.resolve(engine, name).await?;
        let target = r.write.as_ref().map_or(name.to_string(), |w| w.send_to().to_string());
        if let Some(p) = exact {
            return Ok(Ok(WriteRoute { target, owner: Owner::of(&snap, &p) }));
        }
        let Some(w) = &r.write else { return Ok(Ok(WriteRoute { target, owner: Owner::Plain })) };
        let owned = self.owned_indices(engine, &snap).await?;
        Ok(Self::owner_of(&snap, &owned, w.index()).map(|owner| WriteRoute { target, owner }))
    }

    /// The pipeline whose query embedding serves a read of `names` (comma list, wildcards,
    /// aliases, data streams, date math).
    pub async fn for_read(&self, engine: &EngineClient, names: &str) -> Result<ReadOwner, EngineError> {
        let snap = self.catalog.snapshot();
        if snap.served.is_empty() && snap.unavailable.is_empty() {
            return Ok(ReadOwner::Owned(Owner::Plain));
        }
        if let Some((s, _)) = snap.all().find(|(s, _)| s.pipeline.index == names) {
            return Ok(ReadOwner::Owned(Owner::of(&snap, &s.pipeline.name)));
        }
        let r = self.resolve(engine, names).await?;
        let owned = self.owned_indices(engine, &snap).await?;
        let mut plain = Vec::new();
        let mut owners: BTreeMap<String, Owner> = BTreeMap::new();
        for i in &r.indices {
            match Self::owner_of(&snap, &owned, i) {
                Err(why) => return Ok(ReadOwner::Conflict(why)),
                Ok(Owner::Plain) => plain.push(i.clone()),
                Ok(o) => {
                    let name = o.pipeline().map(|p| p.name.clone()).unwrap_or_default();
                    owners.entry(name).or_insert(o);
                }
            }
        }
        Ok(read_owner(names, owners.into_values().collect(), &plain))
    }

    /// A pipeline index among every index `names` reaches, if any: what `_update_by_query` or
    /// a `_reindex` into `names` would write without vectors.
    pub async fn any_owned(&self, engine: &EngineClient, names: &str) -> Result<Option<String>, EngineError> {
        let snap = self.catalog.snapshot();
        if snap.served.is_empty() && snap.unavailable.is_empty() {
            return Ok(None);
        }
        let owned = self.owned_indices(engine, &snap).await?;
        for name in names.split(',') {
            if owned.contains_key(name) {
                return Ok(Some(name.to_string()));
            }
            let r = self.resolve(engine, name).await?;
            if let Some(i) = r.indices.iter().find(|i| owned.contains_key(*i)) {
                return Ok(Some(i.clone()));
            }
        }
        Ok(None)
    }
}

/// The owner of a read over indices of `owners` (one per pipeline) and `plain` ones. Pure.
fn read_owner(names: &str, owners: Vec<Owner>, plain: &[String]) -> ReadOwner {
    let Some(first) = owners.first().cloned() else { return ReadOwner::Owned(Owner::Plain) };
    let p = first.pipeline().cloned().expect("an owner with a pipeline");
    if !plain.is_empty() {
        let more = if plain.len() > 1 { format!(" and {} more", plain.len() - 1) } else { String::new() };
        return ReadOwner::Conflict(format!(
            "`{names}` reaches `{}`{more}, which no pipeline owns, and indices of pipeline `{}`: a semantic search over both would miss the vectors of the first; search them separately",
            plain[0], p.name
        ));
    }
    for o in &owners[1..] {
        let q = o.pipeline().expect("an owner with a pipeline");
        if !alike(&p, q) {
            return ReadOwner::Conflict(format!(
                "`{names}` reaches indices of pipelines `{}` (model `{}`, field `{}`) and `{}` (model `{}`, field `{}`): one query vector cannot search both; search them separately",
                p.name,
                p.query_model(),
                p.fields[p.live_field()].vector,
                q.name,
                q.query_model(),
                q.fields[q.live_field()].vector
            ));
        }
    }
    ReadOwner::Owned(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index(name: &str, aliases: &[&str]) -> Value {
        json!({"name": name, "aliases": aliases, "attributes": ["open"]})
    }

    #[test]
    fn every_kind_of_name_resolves_to_its_indices_and_its_write_target() {
        let ix = |n: &str| WriteTarget::Index(n.into());
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        // a concrete index
        let r = resolution_of(
            &json!({"indices": [index("docs-v1", &["docs"])], "aliases": [], "data_streams": []}),
            None,
            "docs-v1",
        );
        assert_eq!((r.indices, r.write), (set(&["docs-v1"]), Some(ix("docs-v1"))));
        // an alias over one index
        let r = resolution_of(
            &json!({"indices": [], "aliases": [{"name": "docs", "indices": ["docs-v2"]}], "data_streams": []}),
            None,
            "docs",
        );
        assert_eq!((r.indices, r.write), (set(&["docs-v2"]), Some(ix("docs-v2"))));
        // an alias over two: reads reach both, writes its write index (none marked: nowhere)
        let two = json!({"indices": [], "aliases": [{"name": "docs", "indices": ["a", "b"]}], "data_streams": []});
        let marked = json!({"a": {"aliases": {"docs": {}}}, "b": {"aliases": {"docs": {"is_write_index": true}}}});
        let r = resolution_of(&two, Some(&marked), "docs");
        assert_eq!((r.indices, r.write), (set(&["a", "b"]), Some(ix("b"))));
        assert_eq!(
            resolution_of(&two, Some(&json!({"a": {"aliases": {"docs": {}}}, "b": {"aliases": {"docs": {}}}})), "docs")
                .write,
            None
        );
        // a data stream: every backing index; writes go to the stream, landing in the newest
        let ds = json!({"indices": [], "aliases": [], "data_streams": [{"name": "logs-x", "backing_indices": [".ds-logs-x-000001", ".ds-logs-x-000002"], "timestamp_field": "@timestamp"}]});
        let r = resolution_of(&ds, None, "logs-x");
        assert_eq!(r.indices, set(&[".ds-logs-x-000001", ".ds-logs-x-000002"]));
        let w = r.write.unwrap();
        assert_eq!((w.send_to(), w.index()), ("logs-x", ".ds-logs-x-000002"));
        // date math naming one index
        let r = resolution_of(
            &json!({"indices": [index("docs-2026.12.07", &[])], "aliases": [], "data_streams": []}),
            None,
            "<docs-{now/d}>",
        );
        assert_eq!(r.write, Some(ix("docs-2026.12.07")));
        // a wildcard and a comma list: reads only; closed indices are not read
        let wild = json!({"indices": [index("docs-v1", &[]), index("docs-v2", &["docs"]), {"name": "docs-old", "attributes": ["closed"]}], "aliases": [{"name": "docs", "indices": ["docs-v2"]}], "data_streams": []});
        let r = resolution_of(&wild, None, "docs*");
        assert_eq!((r.indices, r.write), (set(&["docs-v1", "docs-v2"]), None));
        let r = resolution_of(&wild, None, "docs-v1,docs");
        assert_eq!((r.indices, r.write), (set(&["docs-v1", "docs-v2"]), None));
        // an unknown name: nothing
        assert_eq!(
            resolution_of(&json!({"indices": [], "aliases": [], "data_streams": []}), None, "nope"),
            Resolution::default()
        );
    }

    #[test]
    fn each_name_of_a_batch_reaches_its_own_indices() {
        let answer = json!({
            "indices": [index("a-v1", &["a"]), index("plain", &[]), {"name": "shut", "attributes": ["closed"]}],
            "aliases": [{"name": "a", "indices": ["a-v1", "a-v2"]}],
            "data_streams": [{"name": "logs", "backing_indices": [".ds-logs-1", ".ds-logs-2"]}],
        });
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(reach_of(&answer, "a"), set(&["a-v1", "a-v2"]));
        assert_eq!(reach_of(&answer, "a-v1"), set(&["a-v1"]));
        assert_eq!(reach_of(&answer, "logs"), set(&[".ds-logs-1", ".ds-logs-2"]));
        assert_eq!(reach_of(&answer, "shut"), set(&[]), "a closed index is read by nobody");
        assert_eq!(reach_of(&answer, "nope"), set(&[]));
        assert_eq!(reach_of(&Value::Null, "a"), set(&[]), "an engine refusal reaches nothing");
    }

    fn pipeline(name: &str, model: &str, vector: &str) -> Arc<Pipeline> {
        Arc::new(
            Pipeline::from_json(
                name,
                &json!({"index": name, "model": model, "fields": [{"source": ["text"], "vector": vector}]}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn a_read_has_one_owner_only_when_one_query_vector_serves_every_index() {
        let a = Owner::Served(pipeline("a", "m1", "v"));
        let b_alike = Owner::Served(pipeline("b", "m1", "v"));
        let c_other = Owner::Served(pipeline("c", "m2", "v"));
        let owned = |r: ReadOwner| match r {
            ReadOwner::Owned(o) => o.pipeline().map(|p| p.name.clone()),
            ReadOwner::Conflict(why) => panic!("{why}"),
        };
        assert_eq!(owned(read_owner("x", vec![], &["plain".into()])), None, "plain indices only: no owner");
        assert_eq!(owned(read_owner("x", vec![a.clone()], &[])).as_deref(), Some("a"));
        assert_eq!(owned(read_owner("x", vec![a.clone(), b_alike], &[])).as_deref(), Some("a"), "same model and field");
        let ReadOwner::Conflict(why) = read_owner("a,c", vec![a.clone(), c_other], &[]) else { panic!("two models") };
        assert!(why.contains("`m1`") && why.contains("`m2`") && why.contains("separately"), "{why}");
        let ReadOwner::Conflict(why) = read_owner("a,p", vec![a], &["p".into(), "q".into()]) else { panic!("mixed") };
        assert!(why.contains("`p` and 1 more") && why.contains("no pipeline owns"), "{why}");
    }
}
