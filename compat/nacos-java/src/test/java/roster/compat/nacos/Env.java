package roster.compat.nacos;

import com.alibaba.nacos.api.PropertyKeyConst;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Properties;
import java.util.function.BooleanSupplier;

/** Addresses of the server under test and small helpers shared by the tests. */
final class Env {
    private Env() {}

    static String get(String name, String dflt) {
        String p = System.getProperty(name);
        if (p != null && !p.isBlank()) return p;
        String e = System.getenv(name);
        if (e != null && !e.isBlank()) return e;
        return dflt;
    }

    /** Nacos server list (HTTP ports; the client dials gRPC at each + 1000). */
    static String nacosAddr() {
        return get("NACOS_ADDR", "127.0.0.1:8848");
    }

    /** Base URL of Roster's native HTTP API (default: the first Nacos address). */
    static String nativeBase() {
        return get("ROSTER_HTTP", "http://" + nacosAddr().split(",")[0]);
    }

    /** ZooKeeper connect string of the same server or cluster. */
    static String zkConnect() {
        return get("ZK_CONNECT", "127.0.0.1:2181");
    }

    static {
        // The client dials gRPC at HTTP port + 1000 unless told otherwise (tests that must keep
        // both ports in one range set NACOS_GRPC_OFFSET and start Roster with --grpc-listen).
        String offset = get("NACOS_GRPC_OFFSET", null);
        if (offset != null) System.setProperty("nacos.server.grpc.port.offset", offset);
    }

    static Properties props() {
        Properties p = new Properties();
        p.setProperty(PropertyKeyConst.SERVER_ADDR, nacosAddr());
        return p;
    }

    private static final HttpClient HTTP =
            HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    static HttpResponse<String> http(String method, String path, String jsonBody) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(nativeBase() + path))
                .timeout(Duration.ofSeconds(10));
        if (jsonBody == null) {
            b.method(method, HttpRequest.BodyPublishers.noBody());
        } else {
            b.header("Content-Type", "application/json")
                    .method(method, HttpRequest.BodyPublishers.ofString(jsonBody));
        }
        return HTTP.send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    /** Poll until the condition holds or the deadline passes (then fail with `what`). */
    static void await(String what, long timeoutMs, BooleanSupplier cond) throws InterruptedException {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (System.currentTimeMillis() < deadline) {
            try {
                if (cond.getAsBoolean()) return;
            } catch (RuntimeException ignored) {
                // not yet (e.g. a server switch in progress)
            }
            Thread.sleep(100);
        }
        throw new AssertionError("timed out after " + timeoutMs + " ms waiting for: " + what);
    }

    static String unique(String prefix) {
        return prefix + "-" + Long.toHexString(System.nanoTime());
    }
}
