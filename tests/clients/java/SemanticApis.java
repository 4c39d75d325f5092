// Elastic's semantic APIs with the official Java client (elasticsearch-java 8.19), unchanged,
// through the sidecar on a cluster whose licence has none of them. The Java client always asks
// for typed_keys and cannot read an aggregation without it: every search here aggregates, on
// answers the engine gives (a rewritten semantic query) and answers the sidecar builds (an rrf
// retriever it fuses). Arguments: the sidecar's URL, a fresh index name, a model of the sidecar.
import co.elastic.clients.elasticsearch.ElasticsearchClient;
import co.elastic.clients.elasticsearch._types.Refresh;
import co.elastic.clients.elasticsearch.core.BulkRequest;
import co.elastic.clients.elasticsearch.core.BulkResponse;
import co.elastic.clients.elasticsearch.core.SearchResponse;
import co.elastic.clients.json.jackson.JacksonJsonpMapper;
import co.elastic.clients.transport.rest_client.RestClientTransport;
import java.io.StringReader;
import java.util.List;
import java.util.Map;
import org.apache.http.HttpHost;
import org.elasticsearch.client.RestClient;

public class SemanticApis {
    static void check(boolean ok, Object what) {
        if (!ok) {
            throw new AssertionError(String.valueOf(what));
        }
    }

    static final String QUESTION = "how do I avoid sore muscles after running";

    public static void main(String[] args) throws Exception {
        String url = args[0], index = args[1], model = args[2];
        try (RestClient rest = RestClient.builder(HttpHost.create(url)).build()) {
            ElasticsearchClient es = new ElasticsearchClient(new RestClientTransport(rest, new JacksonJsonpMapper()));
            es.indices().create(c -> c.withJson(new StringReader(
                "{\"mappings\": {\"properties\": {\"topic\": {\"type\": \"keyword\"},"
                + " \"content\": {\"type\": \"semantic_text\", \"inference_id\": \"" + model + "\"}}}}")).index(index));
            String[][] docs = {
                {"running", "Stretch your calves and hamstrings after a run; cooling down lowers muscle soreness."},
                {"baking", "A sourdough starter needs flour and water, fed every day."},
                {"ocean", "The moon's gravity raises two tides a day on most coasts."},
                {"sleep", "Adults need seven to nine hours of sleep; a regular bedtime helps."},
            };
            BulkRequest.Builder bulk = new BulkRequest.Builder().refresh(Refresh.True);
            for (String[] d : docs) {
                bulk.operations(op -> op.index(i -> i.index(index).id(d[0]).document(Map.of("topic", d[0], "content", d[1]))));
            }
            BulkResponse written = es.bulk(bulk.build());
            check(!written.errors(), written);

            String aggs = "\"aggs\": {\"topics\": {\"terms\": {\"field\": \"topic\"}}}";
            SearchResponse<Map> r = es.search(s -> s.withJson(new StringReader(
                "{\"query\": {\"semantic\": {\"field\": \"content\", \"query\": \"" + QUESTION + "\"}}, " + aggs + "}")).index(index), Map.class);
            check(r.hits().hits().get(0).id().equals("running"), r);
            check(r.aggregations().get("topics").sterms().buckets().array().size() == 4, r);

            r = es.search(s -> s.withJson(new StringReader(
                "{\"retriever\": {\"rrf\": {\"retrievers\": ["
                + "{\"standard\": {\"query\": {\"match\": {\"topic\": \"sleep\"}}}},"
                + "{\"standard\": {\"query\": {\"semantic\": {\"field\": \"content\", \"query\": \"" + QUESTION + "\"}}}}],"
                + " \"rank_window_size\": 4}}, \"size\": 2, " + aggs + "}")).index(index), Map.class);
            List<String> top = r.hits().hits().stream().map(h -> h.id()).sorted().toList();
            check(top.equals(List.of("running", "sleep")), r);
            check(!r.aggregations().get("topics").sterms().buckets().array().isEmpty(), r);

            r = es.search(s -> s.withJson(new StringReader(
                "{\"knn\": {\"field\": \"content\", \"k\": 2, \"num_candidates\": 10, \"query_vector_builder\":"
                + " {\"text_embedding\": {\"model_id\": \"" + model + "\", \"model_text\": \"" + QUESTION + "\"}}}, " + aggs + "}")).index(index), Map.class);
            check(r.hits().hits().get(0).id().equals("running"), r);
            es.indices().delete(d -> d.index(index));
            System.out.println("Java client: semantic_text mapping, bulk, semantic + typed_keys aggs, rrf retriever + typed_keys aggs, knn qvb: ok");
        }
    }
}
