// A long-lived SunPKCS11 host for test/clients/sunpkcs11-respawn.test.ts: it configures the provider once, loads
// the PKCS11 KeyStore once, takes the private key object once, then serves one command per stdin line with those
// same objects, so the test can kill the module's helper between two signatures.
//   sign <base64 message>  ->  SIGNED <base64 signature>  |  FAILED <exception chain>
//   aliases                ->  ALIASES <comma-separated aliases>  |  FAILED ...
// Usage: java RespawnSigner <provider config> <alias> <signature algorithm>
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.security.Signature;
import java.util.Base64;
import java.util.Collections;

public final class RespawnSigner {
  public static void main(String[] args) throws Exception {
    Provider provider = Security.getProvider("SunPKCS11").configure(args[0]);
    KeyStore keyStore = KeyStore.getInstance("PKCS11", provider);
    keyStore.load(null, null);
    PrivateKey key = (PrivateKey) keyStore.getKey(args[1], null);
    if (key == null) throw new IllegalStateException("no private key with alias " + args[1]);
    System.out.println("READY " + ProcessHandle.current().pid());
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    for (String line; (line = in.readLine()) != null; ) {
      try {
        if (line.startsWith("sign ")) {
          Signature signature = Signature.getInstance(args[2], provider);
          signature.initSign(key);
          signature.update(Base64.getDecoder().decode(line.substring(5)));
          System.out.println("SIGNED " + Base64.getEncoder().encodeToString(signature.sign()));
        } else if (line.equals("aliases")) {
          System.out.println("ALIASES " + String.join(",", Collections.list(keyStore.aliases())));
        } else {
          System.out.println("FAILED unknown command");
        }
      } catch (Exception e) {
        StringBuilder chain = new StringBuilder();
        for (Throwable cause = e; cause != null; cause = cause.getCause()) {
          if (chain.length() > 0) chain.append(" <- ");
          chain.append(cause);
        }
        System.out.println("FAILED " + chain.toString().replace('\n', ' '));
      }
      System.out.flush();
    }
  }
}
