package roster.compat;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.stream.Collectors;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.api.transaction.CuratorOp;
import org.apache.curator.framework.api.transaction.CuratorTransactionResult;
import org.apache.curator.framework.api.transaction.OperationType;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.OpResult;
import org.apache.zookeeper.data.Stat;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** client.transaction().forOperations(...): all-or-nothing multi with per-op results. */
class TransactionTest {
    private CuratorFramework client;
    private String root;

    @BeforeEach
    void connect() throws Exception {
        client = Zk.client();
        root = Zk.uniqueRoot("txn");
        client.create().forPath(root);
    }

    @AfterEach
    void cleanup() throws Exception {
        try {
            Zk.deleteTree(client, root);
        } finally {
            client.close();
        }
    }

    @Test
    void createSetDataCheckCommitTogether() throws Exception {
        String path = root + "/node";
        CuratorOp create = client.transactionOp().create().forPath(path, bytes("v0"));
        CuratorOp set = client.transactionOp().setData().withVersion(0).forPath(path, bytes("v1"));
        CuratorOp check = client.transactionOp().check().withVersion(1).forPath(path);
        List<CuratorTransactionResult> results = client.transaction().forOperations(create, set, check);

        assertEquals(List.of(OperationType.CREATE, OperationType.SET_DATA, OperationType.CHECK),
                results.stream().map(CuratorTransactionResult::getType).collect(Collectors.toList()));
        assertEquals(path, results.get(0).getResultPath());
        assertEquals(1, results.get(1).getResultStat().getVersion());
        assertEquals(0, results.get(2).getError());
        Stat stat = new Stat();
        assertArrayEquals(bytes("v1"), client.getData().storingStatIn(stat).forPath(path));
        assertEquals(1, stat.getVersion());
    }

    @Test
    void failingCheckAppliesNothing() throws Exception {
        String existing = root + "/existing";
        client.create().forPath(existing, bytes("v0"));
        CuratorOp create = client.transactionOp().create().forPath(root + "/new", bytes("x"));
        CuratorOp set = client.transactionOp().setData().forPath(existing, bytes("changed"));
        CuratorOp check = client.transactionOp().check().withVersion(7).forPath(existing);
        CuratorOp delete = client.transactionOp().delete().forPath(existing);

        KeeperException e = assertThrows(KeeperException.class,
                () -> client.transaction().forOperations(create, set, check, delete));
        assertEquals(KeeperException.Code.BADVERSION, e.code());
        List<Integer> errors = e.getResults().stream()
                .map(r -> ((OpResult.ErrorResult) r).getErr())
                .collect(Collectors.toList());
        assertEquals(List.of(0, 0, KeeperException.Code.BADVERSION.intValue(),
                KeeperException.Code.RUNTIMEINCONSISTENCY.intValue()), errors);

        assertNull(client.checkExists().forPath(root + "/new"));
        Stat stat = new Stat();
        assertArrayEquals(bytes("v0"), client.getData().storingStatIn(stat).forPath(existing));
        assertEquals(0, stat.getVersion());
    }

    @Test
    void failingCreateOfExistingNodeAppliesNothing() throws Exception {
        client.create().forPath(root + "/taken");
        CuratorOp first = client.transactionOp().create().forPath(root + "/first");
        CuratorOp dup = client.transactionOp().create().forPath(root + "/taken");
        KeeperException e = assertThrows(KeeperException.class,
                () -> client.transaction().forOperations(first, dup));
        assertEquals(KeeperException.Code.NODEEXISTS, e.code());
        assertNull(client.checkExists().forPath(root + "/first"));
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
