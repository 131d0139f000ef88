package roster.compat.matrix;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/** Roster's native HTTP API (docs/api.md): a lease kept alive, an instance bound to it. */
final class NativeFront implements Front {
  static final String SERVICE = "matrix-native-" + Env.RUN;
  private final String base;
  private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
  private final ObjectMapper json = new ObjectMapper();
  private final ScheduledExecutorService keepAlive = Executors.newSingleThreadScheduledExecutor();

  NativeFront(String hostPort) {
    this.base = "http://" + hostPort;
  }

  private JsonNode send(String method, String path, String body) throws Exception {
    HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(10));
    b = body == null ? b.method(method, HttpRequest.BodyPublishers.noBody())
        : b.header("Content-Type", "application/json").method(method, HttpRequest.BodyPublishers.ofString(body));
    HttpResponse<String> r = http.send(b.build(), HttpResponse.BodyHandlers.ofString());
    if (r.statusCode() == 404 && method.equals("GET")) return null;
    if (r.statusCode() / 100 != 2) throw new IllegalStateException(method + " " + path + ": " + r.statusCode() + " " + r.body());
    return r.body().isEmpty() ? null : json.readTree(r.body());
  }

  @Override
  public Endpoint register(String ip, int port) throws Exception {
    long lease = send("POST", "/v1/leases", "{\"ttl_seconds\":15}").get("id").asLong();
    keepAlive.scheduleAtFixedRate(() -> {
      try {
        send("POST", "/v1/leases/" + lease + "/keepalive", null);
      } catch (Exception e) {
        System.err.println("lease keepalive: " + e);
      }
    }, 3, 3, TimeUnit.SECONDS);
    send("POST", "/v1/registry/services/" + SERVICE + "/instances",
        "{\"ip\":\"" + ip + "\",\"port\":" + port + ",\"lease\":" + lease + "}");
    return new Endpoint(SERVICE, ip + ":" + port, lease);
  }

  @Override
  public void deregister(Endpoint e) throws Exception {
    keepAlive.shutdownNow();
    send("DELETE", "/v1/leases/" + e.handle(), null);
  }

  @Override
  public Set<String> discover(String service) throws Exception {
    JsonNode list = send("GET", "/v1/registry/services/" + URLEncoder.encode(service, StandardCharsets.UTF_8).replace("+", "%20")
        + "/instances", null);
    Set<String> out = new TreeSet<>();
    if (list != null) {
      for (JsonNode i : list.get("instances")) out.add(i.get("ip").asText() + ":" + i.get("port").asInt());
    }
    return out;
  }

  @Override
  public void close() {
    keepAlive.shutdownNow();
  }

  @Override
  public String toString() {
    return "native " + base;
  }
}
