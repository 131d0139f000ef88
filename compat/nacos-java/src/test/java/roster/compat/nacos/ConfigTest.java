package roster.compat.nacos;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.alibaba.nacos.api.config.ConfigFactory;
import com.alibaba.nacos.api.config.ConfigService;
import com.alibaba.nacos.api.config.listener.AbstractListener;
import java.net.http.HttpResponse;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The real nacos-client 2.x config over gRPC against Roster. */
class ConfigTest {
    private ConfigService writer;
    private ConfigService reader;

    @BeforeEach
    void setUp() throws Exception {
        writer = ConfigFactory.createConfigService(Env.props());
        reader = ConfigFactory.createConfigService(Env.props());
    }

    @AfterEach
    void tearDown() throws Exception {
        writer.shutDown();
        reader.shutDown();
    }

    @Test
    void publishGetListenAndRemove() throws Exception {
        String dataId = Env.unique("app.yaml");
        String group = "DEFAULT_GROUP";
        assertNull(reader.getConfig(dataId, group, 5_000), "absent config reads as null");

        assertTrue(writer.publishConfig(dataId, group, "port: 1", "yaml"));
        Env.await("config readable", 10_000, () -> {
            try {
                return "port: 1".equals(reader.getConfig(dataId, group, 5_000));
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });

        List<String> received = new CopyOnWriteArrayList<>();
        reader.addListener(dataId, group, new AbstractListener() {
            @Override
            public void receiveConfigInfo(String content) {
                received.add(content);
            }
        });
        assertTrue(writer.publishConfig(dataId, group, "port: 2", "yaml"));
        Env.await("listener told of the change", 10_000, () -> received.contains("port: 2"));

        // A write through the native API reaches the Nacos listener too.
        HttpResponse<String> put = Env.http("PUT", "/v1/config/" + dataId + "?group=" + group,
                "{\"content\": \"port: 3\"}");
        assertTrue(put.statusCode() / 100 == 2, put.statusCode() + " " + put.body());
        Env.await("listener told of the native write", 10_000, () -> received.contains("port: 3"));

        assertTrue(writer.removeConfig(dataId, group));
        Env.await("config removed", 10_000, () -> {
            try {
                return reader.getConfig(dataId, group, 5_000) == null;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
    }

    @Test
    void casPublishCreatesAMissingConfig() throws Exception {
        // Nacos checks casMd5 only against a config that exists; Dubbo 3 writes its first
        // interface -> application mapping with publishConfigCas(..., "0").
        String dataId = Env.unique("org.example.EchoService");
        assertTrue(writer.publishConfigCas(dataId, "mapping", "app-a", "0"));
        Env.await("the CAS-created config readable", 10_000, () -> {
            try {
                return "app-a".equals(reader.getConfig(dataId, "mapping", 5_000));
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        assertEquals(false, writer.publishConfigCas(dataId, "mapping", "app-b", "0"));
        String md5 = com.alibaba.nacos.common.utils.MD5Utils.md5Hex("app-a", "UTF-8");
        assertTrue(writer.publishConfigCas(dataId, "mapping", "app-b,app-a", md5));
        Env.await("the CAS update readable", 10_000, () -> {
            try {
                return "app-b,app-a".equals(reader.getConfig(dataId, "mapping", 5_000));
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        assertTrue(writer.removeConfig(dataId, "mapping"));
    }

    @Test
    void casPublishRefusesAStaleMd5() throws Exception {
        String dataId = Env.unique("cas.properties");
        assertTrue(writer.publishConfig(dataId, "DEFAULT_GROUP", "a=1"));
        assertEquals(false, writer.publishConfigCas(dataId, "DEFAULT_GROUP", "a=2", "0123456789abcdef0123456789abcdef"));
        Env.await("value unchanged by the refused CAS", 10_000, () -> {
            try {
                return "a=1".equals(reader.getConfig(dataId, "DEFAULT_GROUP", 5_000));
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
    }
}
