package roster.compat.dubbo.provider;

import org.apache.dubbo.config.annotation.DubboService;
import org.apache.dubbo.rpc.RpcContext;
import org.springframework.beans.factory.annotation.Value;
import roster.compat.dubbo.api.EchoService;

/** The exported implementation. */
@DubboService
public class EchoServiceImpl implements EchoService {
  @Value("${dubbo.application.name}")
  private String app;

  @Override
  public String echo(String text) {
    // The protocol the call came in on: "dubbo" over the network, "injvm" in-process.
    return "echo:" + text + " from " + app + " via " + RpcContext.getServiceContext().getUrl().getProtocol();
  }
}
