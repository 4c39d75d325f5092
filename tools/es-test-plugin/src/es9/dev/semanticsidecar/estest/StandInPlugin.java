package dev.semanticsidecar.estest;

import java.util.Collection;
import java.util.function.Predicate;
import java.util.function.Supplier;

import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.rest.RestHandler;

/** Elasticsearch 9.x: {@code getRestHandlers} takes a {@code RestHandlersServices} record. */
public final class StandInPlugin extends StandInBase {
    @Override
    public Collection<RestHandler> getRestHandlers(RestHandlersServices services, Supplier<DiscoveryNodes> nodes,
            Predicate<NodeFeature> features) {
        return restHandlers();
    }
}
