package roster.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;

/** Connection and polling helpers shared by the Curator compatibility tests. */
final class Zk {
    private Zk() {}

    /** The server under test: -DZK_CONNECT, else env ZK_CONNECT, else 127.0.0.1:2181. */
    static String connectString() {
        String fromProperty = System.getProperty("ZK_CONNECT");
        if (fromProperty != null && !fromProperty.isBlank()) return fromProperty;
        String fromEnv = System.getenv("ZK_CONNECT");
        if (fromEnv != null && !fromEnv.isBlank()) return fromEnv;
        return "127.0.0.1:2181";
    }

    /** A started client, connected (or the test fails) to the server under test. */
    static CuratorFramework client() throws InterruptedException {
        return client(connectString(), 10_000);
    }

    static CuratorFramework client(String connect, int sessionTimeoutMs) throws InterruptedException {
        CuratorFramework client = CuratorFrameworkFactory.builder()
                .connectString(connect)
                .sessionTimeoutMs(sessionTimeoutMs)
                .connectionTimeoutMs(10_000)
                .retryPolicy(new ExponentialBackoffRetry(100, 10, 1_000))
                .build();
        client.start();
        if (!client.blockUntilConnected(15, TimeUnit.SECONDS)) {
            client.close();
            throw new AssertionError("could not connect to " + connect + " within 15s");
        }
        return client;
    }

    /** A unique root path for one test class or test. */
    static String uniqueRoot(String name) {
        return "/curator-" + name + "-" + UUID.randomUUID().toString().substring(0, 8);
    }

    /** Polls until the condition holds or the deadline passes (then fails with the message). */
    static void await(String what, long timeoutMs, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out after " + timeoutMs + " ms waiting for " + what);
            }
            Thread.sleep(20);
        }
    }

    /** A read that may throw (a Curator call). */
    interface Read<T> {
        T get() throws Exception;
    }

    /**
     * Asserts that {@code read} returns {@code expected} within 5 s, retrying it ({@link #await})
     * until then: what another client wrote is seen eventually, not at once, by a session on
     * another member. On failure the message shows the last value read.
     */
    static <T> void eventually(T expected, Read<T> read) throws InterruptedException {
        Object[] last = {null};
        try {
            await("a read to return " + expected, 5_000, () -> {
                try {
                    last[0] = read.get();
                } catch (Exception e) {
                    last[0] = e;
                }
                return expected.equals(last[0]);
            });
        } catch (AssertionError timedOut) {
            assertEquals(expected, last[0], timedOut.getMessage());
        }
    }

    /**
     * ZooKeeper's sync: once it returns, this client's server has applied every write committed
     * before it. Needed before reading what another client (maybe on another member) wrote.
     */
    static void sync(CuratorFramework client, String path) throws Exception {
        CountDownLatch done = new CountDownLatch(1);
        client.sync().inBackground((c, event) -> done.countDown()).forPath(path);
        if (!done.await(15, TimeUnit.SECONDS)) {
            throw new AssertionError("sync of " + path + " did not complete within 15s");
        }
    }

    /** Deletes a test root and everything below it, ignoring a missing node. */
    static void deleteTree(CuratorFramework client, String path) throws Exception {
        sync(client, path); // other clients' nodes under it, maybe written through other members
        if (client.checkExists().forPath(path) != null) {
            client.delete().deletingChildrenIfNeeded().forPath(path);
        }
    }
}
