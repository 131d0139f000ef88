package roster.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** InterProcessMutex: two clients (two sessions) never hold the lock at the same time. */
class InterProcessMutexTest {
    private CuratorFramework a;
    private CuratorFramework b;
    private String root;

    @BeforeEach
    void connect() throws Exception {
        a = Zk.client();
        b = Zk.client();
        root = Zk.uniqueRoot("mutex");
    }

    @AfterEach
    void cleanup() throws Exception {
        try {
            Zk.deleteTree(b, root);
        } finally {
            a.close();
            b.close();
        }
    }

    @Test
    void twoClientsNeverOverlap() throws Exception {
        String counter = root + "/counter";
        a.create().creatingParentsIfNeeded().forPath(counter, bytes("0"));
        AtomicInteger inside = new AtomicInteger();
        AtomicInteger maxInside = new AtomicInteger();
        int rounds = 20;
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try {
            List<Future<?>> done = new ArrayList<>();
            for (CuratorFramework client : List.of(a, b)) {
                done.add(pool.submit(() -> {
                    InterProcessMutex mutex = new InterProcessMutex(client, root + "/lock");
                    for (int i = 0; i < rounds; i++) {
                        assertTrue(mutex.acquire(20, TimeUnit.SECONDS), "lock not acquired in 20s");
                        try {
                            maxInside.accumulateAndGet(inside.incrementAndGet(), Math::max);
                            // Unprotected read-modify-write on the server: loses updates unless
                            // the lock really excludes the other client.
                            int value = Integer.parseInt(str(client.getData().forPath(counter)));
                            client.setData().forPath(counter, bytes(Integer.toString(value + 1)));
                            inside.decrementAndGet();
                        } finally {
                            mutex.release();
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> f : done) f.get(60, TimeUnit.SECONDS);
        } finally {
            pool.shutdownNow();
        }
        assertEquals(1, maxInside.get(), "two holders at once");
        assertEquals(Integer.toString(2 * rounds), str(a.getData().forPath(counter)));
    }

    @Test
    void heldLockBlocksOthersUntilReleasedOrHolderGone() throws Exception {
        InterProcessMutex held = new InterProcessMutex(a, root + "/lock");
        InterProcessMutex other = new InterProcessMutex(b, root + "/lock");
        assertTrue(held.acquire(10, TimeUnit.SECONDS));
        assertTrue(held.isAcquiredInThisProcess());
        assertFalse(other.acquire(0, TimeUnit.MILLISECONDS), "acquired a held lock");
        // b's failed attempt removed its node, maybe through another member than a's.
        Zk.sync(a, root + "/lock");
        assertEquals(1, held.getParticipantNodes().size());
        held.release();
        assertTrue(other.acquire(10, TimeUnit.SECONDS));
        assertFalse(held.acquire(0, TimeUnit.MILLISECONDS));
        // The lock node is ephemeral: closing the holder's client frees the lock.
        CuratorFramework c = Zk.client();
        try {
            InterProcessMutex third = new InterProcessMutex(c, root + "/lock");
            b.close();
            assertTrue(third.acquire(15, TimeUnit.SECONDS), "lock not freed by the holder's session closing");
            third.release();
        } finally {
            c.close();
            b = Zk.client();
        }
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String str(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }
}
