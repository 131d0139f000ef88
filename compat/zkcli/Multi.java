// A multi (transaction) run with the ZooKeeper jar's own client API, for compat/zkcli/test.sh:
// zkCli has no multi command, so the zkCli suite launches this as a single-file Java program
//   java -cp /usr/share/java/zookeeper.jar Multi.java <host:port> <root>
// It prints one line per fact; test.sh checks the lines and then inspects the tree with zkCli.
//   ok-results: <one token per op result>
//   failed-code: <KeeperException code name>
//   failed-results: <one token per op result>
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Op;
import org.apache.zookeeper.OpResult;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;

public class Multi {
    public static void main(String[] args) throws Exception {
        String server = args[0];
        String root = args[1];
        CountDownLatch connected = new CountDownLatch(1);
        ZooKeeper zk = new ZooKeeper(server, 10000, e -> {
            if (e.getState() == Watcher.Event.KeeperState.SyncConnected) connected.countDown();
        });
        try {
            if (!connected.await(15, TimeUnit.SECONDS)) {
                System.out.println("error: not connected within 15s");
                System.exit(1);
            }
            String m = root + "/m";
            // Success: create a parent and a child, change the child's data, check its new version.
            List<OpResult> ok = zk.multi(List.of(
                Op.create(m, bytes("parent"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                Op.create(m + "/a", bytes("v0"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                Op.setData(m + "/a", bytes("v1"), 0),
                Op.check(m + "/a", 1)));
            System.out.println("ok-results: " + describe(ok));

            // Atomic failure: the third op's version check fails, so nothing may be applied.
            try {
                zk.multi(List.of(
                    Op.create(m + "/never", bytes("x"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                    Op.setData(m + "/a", bytes("v2"), 1),
                    Op.check(m + "/a", 99),
                    Op.delete(m + "/a", -1)));
                System.out.println("failed-code: NONE (multi unexpectedly succeeded)");
            } catch (KeeperException e) {
                System.out.println("failed-code: " + e.code().name());
                System.out.println("failed-results: " + describe(e.getResults()));
            }
        } finally {
            zk.close();
        }
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String describe(List<OpResult> results) {
        if (results == null) return "null";
        StringBuilder out = new StringBuilder();
        for (OpResult r : results) {
            if (out.length() > 0) out.append(' ');
            if (r instanceof OpResult.CreateResult) {
                out.append("create:").append(((OpResult.CreateResult) r).getPath());
            } else if (r instanceof OpResult.SetDataResult) {
                out.append("setData:version=").append(((OpResult.SetDataResult) r).getStat().getVersion());
            } else if (r instanceof OpResult.CheckResult) {
                out.append("check");
            } else if (r instanceof OpResult.DeleteResult) {
                out.append("delete");
            } else if (r instanceof OpResult.ErrorResult) {
                out.append("error:").append(((OpResult.ErrorResult) r).getErr());
            } else {
                out.append(r.getClass().getSimpleName());
            }
        }
        return out.toString();
    }
}
