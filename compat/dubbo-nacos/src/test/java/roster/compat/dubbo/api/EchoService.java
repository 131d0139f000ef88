package roster.compat.dubbo.api;

/** The RPC interface the provider exports and the consumer calls. */
public interface EchoService {
  /** Returns "echo:{text} from {provider application} via {protocol the call arrived on}". */
  String echo(String text);
}
