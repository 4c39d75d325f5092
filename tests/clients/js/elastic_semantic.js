// Elastic's semantic APIs with the official JS client (@elastic/elasticsearch 8.19), unchanged,
// through the sidecar on a cluster whose licence has none of them: an inference endpoint, a
// semantic_text mapping, helpers.bulk, the semantic query with the semantic highlighter, a knn
// with query_vector_builder on the field, the rrf retriever with typed_keys aggregations, the
// inference API. Arguments: the sidecar's URL, a fresh index name, a model of the sidecar.
'use strict'
const assert = require('assert')
const { Client } = require('@elastic/elasticsearch')

const [url, index, model] = process.argv.slice(2)
const client = new Client({ node: url })

const docs = [
  ['running', 'Stretch your calves and hamstrings after a run; cooling down lowers muscle soreness.'],
  ['baking', 'A sourdough starter needs flour and water, fed every day.'],
  ['ocean', "The moon's gravity raises two tides a day on most coasts."],
  ['code', 'A compiler turns source code into machine code in several passes.'],
  ['sleep', 'Adults need seven to nine hours of sleep; a regular bedtime helps.']
]
const question = 'how do I avoid sore muscles after running'

async function main () {
  const eid = `${index}-e5`
  await client.inference.put({
    inference_id: eid,
    task_type: 'text_embedding',
    inference_config: { service: 'elasticsearch', service_settings: { model_id: model, num_allocations: 1, num_threads: 1 } }
  })
  await client.indices.create({
    index,
    mappings: { properties: { topic: { type: 'keyword' }, content: { type: 'semantic_text', inference_id: eid } } }
  })
  const mapping = await client.indices.getMapping({ index })
  assert.strictEqual(mapping[index].mappings.properties.content.type, 'semantic_text')
  const stats = await client.helpers.bulk({
    datasource: docs.map(([topic, content]) => ({ topic, content })),
    onDocument: (doc) => ({ index: { _index: index, _id: doc.topic } }),
    refreshOnCompletion: index
  })
  assert.strictEqual(stats.successful, docs.length, JSON.stringify(stats))
  const got = await client.get({ index, id: 'ocean' })
  assert.deepStrictEqual(got._source, { topic: 'ocean', content: docs[2][1] })

  let r = await client.search({
    index,
    query: { semantic: { field: 'content', query: question } },
    highlight: { fields: { content: { type: 'semantic', number_of_fragments: 1 } } }
  })
  assert.strictEqual(r.hits.hits[0]._id, 'running')
  assert.strictEqual(r.hits.hits[0].highlight.content.length, 1)
  r = await client.search({
    index,
    knn: { field: 'content', k: 2, num_candidates: 10, query_vector_builder: { text_embedding: { model_text: question } } }
  })
  assert.strictEqual(r.hits.hits[0]._id, 'running')
  r = await client.search({
    index,
    typed_keys: true,
    size: 3,
    retriever: {
      rrf: {
        retrievers: [
          { standard: { query: { match: { topic: 'sleep' } } } },
          { standard: { query: { semantic: { field: 'content', query: question } } } }
        ],
        rank_window_size: 5
      }
    },
    aggs: { topics: { terms: { field: 'topic' } } }
  })
  assert.deepStrictEqual(r.hits.hits.slice(0, 2).map((h) => h._id).sort(), ['running', 'sleep'])
  assert.ok(r.aggregations['sterms#topics'].buckets.length > 0, JSON.stringify(r.aggregations))
  const emb = await client.inference.inference({ inference_id: eid, input: ['stem cells', 'tides'] })
  assert.deepStrictEqual(emb.text_embedding.map((e) => e.embedding.length), [384, 384])
  await client.indices.delete({ index })
  await client.inference.delete({ inference_id: eid })
  console.log('JS client: inference endpoint, semantic_text mapping, helpers.bulk, semantic + highlight, knn qvb, rrf typed_keys aggs, inference: ok')
}

main().catch((e) => {
  console.error(e.meta ? JSON.stringify(e.meta.body) : e)
  process.exit(1)
})
