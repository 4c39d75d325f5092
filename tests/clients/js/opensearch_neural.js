// OpenSearch's neural search with the official JS client (@opensearch-project/opensearch 3.9),
// unchanged, through the sidecar on a cluster without the neural-search and ml-commons plugins:
// the model id found with ml.searchModels, checked with ml.getModel, ml.predict, documents
// written with helpers.bulk into a sidecar pipeline index, then the neural query alone, in bool
// with a filter, and in msearch; a hybrid query through a score-ranker search pipeline
// (searchPipeline.put/get/delete), and an ingest pipeline with text_embedding simulated. Arguments: the sidecar's URL, a fresh index name, a model name.
'use strict'
const assert = require('assert')
const { Client } = require('@opensearch-project/opensearch')

const [url, index, model] = process.argv.slice(2)
const client = new Client({ node: url })

const docs = [
  ['running', 'Stretch your calves and hamstrings after a run; cooling down lowers muscle soreness.', 'health'],
  ['baking', 'A sourdough starter needs flour and water, fed every day.', 'food'],
  ['ocean', "The moon's gravity raises two tides a day on most coasts.", 'science'],
  ['code', 'A compiler turns source code into machine code in several passes.', 'science'],
  ['sleep', 'Adults need seven to nine hours of sleep; a regular bedtime helps.', 'health']
]
const question = 'how do I avoid sore muscles after running'

async function main () {
  // the sidecar's own pipeline API makes the index (title and text embedded into text_vector)
  await client.transport.request({
    method: 'PUT',
    path: `/_sidecar/pipeline/${index}`,
    body: { index, model, fields: [{ source: ['text'], vector: 'text_vector' }] }
  })
  const found = await client.ml.searchModels({ body: { query: { term: { model_state: 'DEPLOYED' } }, size: 100 } })
  const hit = found.body.hits.hits.find(h => h._source.name === model)
  assert.ok(hit, JSON.stringify(found.body))
  const modelId = hit._id
  const info = await client.ml.getModel({ model_id: modelId })
  assert.strictEqual(info.body.model_state, 'DEPLOYED')
  const pred = await client.ml.predict({ algorithm_name: 'text_embedding', model_id: modelId, body: { text_docs: [question] } })
  const vector = pred.body.inference_results[0].output[0].data
  assert.strictEqual(vector.length, info.body.model_config.embedding_dimension)
  console.log(`ml: model ${modelId} deployed, ${vector.length} dimensions`)

  const result = await client.helpers.bulk({
    datasource: docs.map(([id, text, topic]) => ({ id, text, topic })),
    onDocument: d => ({ index: { _index: index, _id: d.id } }),
    refreshOnCompletion: true
  })
  assert.strictEqual(result.successful, docs.length, JSON.stringify(result))

  const neural = { neural: { text_vector: { query_text: question, model_id: modelId, k: 5 } } }
  const r = await client.search({ index, body: { size: 3, _source: false, query: neural } })
  const ids = r.body.hits.hits.map(h => h._id)
  assert.strictEqual(ids[0], 'running', JSON.stringify(r.body))
  // the same knn query with the predicted vector (this model has no query prefix) sent by hand
  const k = await client.search({ index, body: { size: 3, _source: false, query: { knn: { text_vector: { vector, k: 5 } } } } })
  assert.deepStrictEqual(k.body.hits.hits.map(h => h._id), ids)
  console.log(`neural: ${ids.join(',')} (the knn with the predicted vector)`)

  const inBool = { bool: { must: [neural], filter: [{ term: { topic: 'science' } }] } }
  const b = await client.search({ index, body: { size: 5, _source: ['topic'], query: inBool } })
  assert.ok(b.body.hits.hits.length > 0 && b.body.hits.hits.every(h => h._source.topic === 'science'), JSON.stringify(b.body))
  const m = await client.msearch({ body: [{ index }, { size: 1, _source: false, query: neural }, { index }, { size: 1, query: { match_all: {} } }] })
  assert.deepStrictEqual(m.body.responses.map(x => x.hits.hits.length), [1, 1], JSON.stringify(m.body))
  assert.strictEqual(m.body.responses[0].hits.hits[0]._id, 'running')
  console.log('neural in bool with a filter, and in msearch: ok')

  // hybrid search with a search pipeline, and an ingest pipeline with text_embedding
  const sp = `${index}-rrf`
  await client.searchPipeline.put({ id: sp, body: { phase_results_processors: [{ 'score-ranker-processor': { combination: { technique: 'rrf', rank_constant: 60 } } }] } })
  const got = await client.searchPipeline.get({ id: sp })
  assert.strictEqual(got.body[sp].phase_results_processors[0]['score-ranker-processor'].combination.rank_constant, 60)
  const hybrid = { hybrid: { queries: [{ match: { text: 'sore muscles running' } }, neural] } }
  const h = await client.search({ index, search_pipeline: sp, body: { size: 3, _source: false, query: hybrid } })
  assert.strictEqual(h.body.hits.hits[0]._id, 'running', JSON.stringify(h.body))
  // first on both lists: 2 / (60 + 1)
  assert.ok(Math.abs(h.body.hits.hits[0]._score - 2 / 61) < 1e-6, JSON.stringify(h.body))
  await client.searchPipeline.delete({ id: sp })
  const ip = `${index}-embed`
  await client.ingest.putPipeline({ id: ip, body: { processors: [{ text_embedding: { model_id: modelId, field_map: { text: 'text_embedding' } } }] } })
  const sim = await client.ingest.simulate({ id: ip, body: { docs: [{ _source: { text: question } }] } })
  const embedded = sim.body.docs[0].doc._source.text_embedding
  assert.ok(embedded.length === vector.length, JSON.stringify(sim.body))
  await client.ingest.deletePipeline({ id: ip })
  console.log('searchPipeline put/get/delete with a hybrid query through it, ingest putPipeline / simulate: ok')

  await client.indices.delete({ index })
  await client.transport.request({ method: 'DELETE', path: `/_sidecar/pipeline/${index}` })
}

main().catch(e => {
  console.error(e.meta ? JSON.stringify(e.meta.body) : e)
  process.exit(1)
})
