package roster.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.recipes.cache.ChildData;
import org.apache.curator.framework.recipes.cache.CuratorCache;
import org.apache.curator.framework.recipes.cache.CuratorCacheListener;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** CuratorCache (persistent recursive watch + reads) sees another client's creates, changes, deletes. */
class CuratorCacheTest {
    private CuratorFramework watcher;
    private CuratorFramework writer;
    private String root;

    @BeforeEach
    void connect() throws Exception {
        watcher = Zk.client();
        writer = Zk.client();
        root = Zk.uniqueRoot("cache");
        writer.create().forPath(root, bytes("root"));
        writer.create().forPath(root + "/before", bytes("b0"));
    }

    @AfterEach
    void cleanup() throws Exception {
        try {
            Zk.deleteTree(writer, root);
        } finally {
            watcher.close();
            writer.close();
        }
    }

    @Test
    void seesCreateChangeDeleteInOrder() throws Exception {
        List<String> events = new CopyOnWriteArrayList<>();
        CountDownLatch initialized = new CountDownLatch(1);
        try (CuratorCache cache = CuratorCache.build(watcher, root)) {
            cache.listenable().addListener(CuratorCacheListener.builder()
                    .forCreates(n -> events.add("create " + rel(n) + "=" + str(n)))
                    .forChanges((old, n) -> events.add("change " + rel(n) + " " + str(old) + "->" + str(n)))
                    .forDeletes(old -> events.add("delete " + rel(old)))
                    .forInitialized(initialized::countDown)
                    .build());
            cache.start();
            assertEquals(true, initialized.await(15, TimeUnit.SECONDS), "cache never initialized");
            assertEquals(List.of("create =root", "create /before=b0"), List.copyOf(events));
            events.clear();

            // One change at a time: the cache reads data after each event, so a burst could
            // legitimately be coalesced; stepping makes every event observable.
            step(events, "create /a=1", () -> writer.create().forPath(root + "/a", bytes("1")));
            step(events, "create /a/deep=x", () -> writer.create().forPath(root + "/a/deep", bytes("x")));
            step(events, "change /a 1->2", () -> writer.setData().forPath(root + "/a", bytes("2")));
            step(events, "delete /a/deep", () -> writer.delete().forPath(root + "/a/deep"));
            step(events, "delete /before", () -> writer.delete().forPath(root + "/before"));
            assertEquals(List.of("create /a=1", "create /a/deep=x", "change /a 1->2", "delete /a/deep",
                    "delete /before"), List.copyOf(events));
            assertEquals("2", str(cache.get(root + "/a").orElseThrow()));
            assertEquals(false, cache.get(root + "/before").isPresent());
        }
    }

    interface Action {
        void run() throws Exception;
    }

    private static void step(List<String> events, String expected, Action action) throws Exception {
        int before = events.size();
        action.run();
        Zk.await("cache event '" + expected + "'", 15_000, () -> events.size() > before);
        assertEquals(expected, events.get(before));
    }

    private String rel(ChildData n) {
        return n.getPath().substring(root.length());
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String str(ChildData n) {
        return n.getData() == null ? "null" : new String(n.getData(), StandardCharsets.UTF_8);
    }
}
