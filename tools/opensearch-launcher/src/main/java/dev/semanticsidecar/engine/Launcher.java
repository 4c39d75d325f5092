package dev.semanticsidecar.engine;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.core.common.transport.TransportAddress;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * Starts a single-node OpenSearch with the plugins the sidecar needs, inside this JVM.
 *
 * <p>Why this exists: these machines have no Docker and no OpenSearch distribution, only Maven
 * Central. The plugins are handed to {@link Node} as classpath plugins, which skips the plugin
 * installer, jar-hell checks, the security manager and the bootstrap checks (those live in
 * {@code Bootstrap}, which is not used). This is a development and test engine, never production.
 *
 * <p>Contract with {@code scripts/engine}: the HTTP URL is written atomically to the file named by
 * {@code --url-file} once the node has started; SIGTERM closes the node cleanly and removes it.
 *
 * <p>Not supported: k-NN's native engines (faiss, nmslib) whose JNI libraries are not in the Maven
 * zip (map vectors with the lucene engine), and painless k-NN scoring functions (the painless
 * extension of the k-NN plugin is not wired up for classpath plugins).
 */
public final class Launcher {

    private Launcher() {}

    /** The node, with the plugin classes handed straight to the protected constructor. */
    static final class EmbeddedNode extends Node {
        EmbeddedNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = parseArgs(args);
        Path home = Path.of(require(opts, "home")).toAbsolutePath();
        Path urlFile = Path.of(require(opts, "url-file")).toAbsolutePath();
        String httpPort = opts.getOrDefault("http-port", "0");
        Files.createDirectories(home.resolve("config"));
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Files.deleteIfExists(urlFile);

        Settings settings = Settings.builder()
            .put("cluster.name", "semantic-sidecar-dev")
            .put("node.name", "sidecar-engine")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", "0")
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.destructive_requires_name", false)
            .build();

        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName("sidecar-engine");
        LogConfigurator.configureWithoutConfig(settings);

        Environment environment =
            InternalSettingsPreparer.prepareEnvironment(settings, new HashMap<>(), home.resolve("config"), () -> "sidecar-engine");
        List<Class<? extends Plugin>> plugins = List.of(
            Netty4Plugin.class,
            CommonAnalysisPlugin.class,
            PainlessPlugin.class,
            ReindexPlugin.class,
            // The k-NN jar comes from the plugin's zip (unpacked beside lib/), not from a Maven
            // jar dependency, so it is only on the runtime classpath.
            Class.forName("org.opensearch.knn.plugin.KNNPlugin").asSubclass(Plugin.class)
        );

        Node node = new EmbeddedNode(environment, plugins);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                Files.deleteIfExists(urlFile);
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (IOException | InterruptedException e) {
                System.err.println("engine: error while closing: " + e);
            } finally {
                stopped.countDown();
            }
        }, "engine-shutdown"));

        node.start();
        TransportAddress bound = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress();
        String url = "http://" + bound.getAddress() + ":" + bound.getPort();
        Path tmp = urlFile.resolveSibling(urlFile.getFileName() + ".tmp");
        Files.writeString(tmp, url + "\n", StandardCharsets.UTF_8);
        Files.move(tmp, urlFile, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        System.out.println("engine: listening on " + url);
        stopped.await();
    }

    private static Map<String, String> parseArgs(String[] args) {
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("usage: Launcher --home DIR --url-file FILE [--http-port PORT|RANGE]; bad argument: " + a);
            }
            opts.put(a.substring(2), args[++i]);
        }
        return opts;
    }

    private static String require(Map<String, String> opts, String key) {
        String v = opts.get(key);
        if (v == null) {
            throw new IllegalArgumentException("missing --" + key);
        }
        return v;
    }
}
