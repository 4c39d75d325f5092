package dev.semanticsidecar.estest;

import java.util.Collection;
import java.util.List;
import java.util.Map;

import org.apache.lucene.analysis.Analyzer;
import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.index.analysis.AnalyzerProvider;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.RestHandler;

/**
 * A TEST-ONLY stand-in for three pieces of the full Elasticsearch distribution that Maven Central
 * does not serve: the rest-root module ({@code GET /} and {@code HEAD /}) and, from analysis-common,
 * the {@code english} and {@code cjk} analyzers and the English stemmer and CJK token filters.
 *
 * <p>Why: {@code scripts/engine start --flavor elasticsearch} runs the integ-test-zip distribution,
 * which carries only apm, transport-netty4, x-pack-core and x-pack-security. Without {@code GET /}
 * no client (nor the sidecar) can detect the engine; without the analyzers the project's pipelines
 * cannot create their indices. Everything here is built from Lucene classes already in the
 * distribution's {@code lib/}. It is never meant for a production cluster, which has the real modules.
 *
 * <p>Not provided (and the sidecar must not need them): painless, reindex ({@code _reindex},
 * {@code _update_by_query}, {@code _delete_by_query}) and x-pack-rank-rrf ({@code retriever.rrf}).
 *
 * <p>The two subclasses (es8/, es9/) differ only in {@code ActionPlugin.getRestHandlers}'s
 * signature, which changed in 9.x; {@code scripts/engine} compiles the one that matches.
 */
public abstract class StandInBase extends Plugin implements ActionPlugin, AnalysisPlugin {
    /** Set once the node has built its components; read by the root handler at request time. */
    protected volatile ClusterService clusterService;

    @Override
    public Collection<?> createComponents(PluginServices services) {
        clusterService = services.clusterService();
        return List.of();
    }

    protected Collection<RestHandler> restHandlers() {
        return List.of(new RootHandler(() -> clusterService));
    }

    @Override
    public Map<String, AnalysisProvider<AnalyzerProvider<? extends Analyzer>>> getAnalyzers() {
        return Analysis.analyzers();
    }

    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        return Analysis.tokenFilters();
    }
}
