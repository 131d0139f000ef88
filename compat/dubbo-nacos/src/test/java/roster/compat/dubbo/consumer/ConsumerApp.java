package roster.compat.dubbo.consumer;

import org.apache.dubbo.config.annotation.DubboReference;
import org.apache.dubbo.config.spring.context.annotation.EnableDubbo;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.stereotype.Component;
import roster.compat.dubbo.api.EchoService;

/** The consumer application: holds a Dubbo reference to {@link EchoService}. */
@SpringBootApplication
@EnableDubbo(scanBasePackages = "roster.compat.dubbo.consumer")
public class ConsumerApp {

  /**
   * Holds the reference: check=false so the context starts before the provider is found;
   * scope=remote because Dubbo otherwise calls a provider exported in the same JVM in-process
   * (injvm) and never asks the registry.
   */
  @Component
  public static class Caller {
    @DubboReference(check = false, scope = "remote", timeout = 5000, retries = 0)
    private EchoService echo;

    public String call(String text) {
      return echo.echo(text);
    }
  }
}
