// One javax.crypto.Cipher call through SunPKCS11 with a Managed HSM AES key, for aes-sunpkcs11.test.ts (javac at
// test time). Usage: java AesCipher CONFIG ALIAS TRANSFORMATION encrypt|decrypt IV_HEX AAD_HEX INPUT_HEX
// An empty IV_HEX with encrypt lets the provider choose the IV (GCM). Prints "OUT <hex>" (and "IV <hex>" when the
// provider chose it) or "ERROR <exception class>: <message>" with every cause; the test judges with node:crypto.
import java.security.Key;
import java.security.KeyStore;
import java.security.Provider;
import java.security.Security;
import java.util.Collections;
import java.util.HexFormat;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.IvParameterSpec;

public class AesCipher {
  public static void main(String[] args) throws Exception {
    Provider provider = Security.getProvider("SunPKCS11").configure(args[0]);
    Security.addProvider(provider);
    KeyStore store = KeyStore.getInstance("PKCS11", provider);
    // The token needs no login; SunPKCS11 skips C_Login for a token without CKF_LOGIN_REQUIRED.
    store.load(null, "none".toCharArray());
    System.out.println("ALIASES " + String.join(",", Collections.list(store.aliases())));
    Key key = store.getKey(args[1], null);
    System.out.println("KEY " + key.getAlgorithm() + " " + key.getClass().getSimpleName());
    String transformation = args[2];
    boolean encrypt = args[3].equals("encrypt");
    HexFormat hex = HexFormat.of();
    byte[] iv = hex.parseHex(args[4]);
    byte[] aad = hex.parseHex(args[5]);
    byte[] input = hex.parseHex(args[6]);
    boolean gcm = transformation.contains("GCM");
    try {
      Cipher cipher = Cipher.getInstance(transformation, provider);
      int mode = encrypt ? Cipher.ENCRYPT_MODE : Cipher.DECRYPT_MODE;
      if (iv.length == 0) cipher.init(mode, key);
      else cipher.init(mode, key, gcm ? new GCMParameterSpec(128, iv) : new IvParameterSpec(iv));
      if (gcm && aad.length > 0) cipher.updateAAD(aad);
      byte[] out = cipher.doFinal(input);
      if (iv.length == 0 && cipher.getIV() != null) System.out.println("IV " + hex.formatHex(cipher.getIV()));
      System.out.println("OUT " + hex.formatHex(out));
    } catch (Exception e) {
      StringBuilder text = new StringBuilder("ERROR ");
      for (Throwable t = e; t != null; t = t.getCause()) text.append(t.getClass().getName()).append(": ").append(t.getMessage()).append(" <- ");
      System.out.println(text);
    }
  }
}
