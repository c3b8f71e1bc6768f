// A VaultBackend whose every call fails: unit-test fakes extend it and override only what they script.
import { VaultError, type VaultBackend } from "../../src/vault/types.ts";

const unused = (what: string): Promise<never> => Promise.reject(new VaultError("other", `${what} is not scripted by this test`));

export class UnusedVaultBackend implements VaultBackend {
  serviceKind(..._args: Parameters<VaultBackend["serviceKind"]>): ReturnType<VaultBackend["serviceKind"]> {
    return unused("serviceKind");
  }
  getKey(..._args: Parameters<VaultBackend["getKey"]>): ReturnType<VaultBackend["getKey"]> {
    return unused("getKey");
  }
  listKeyNames(..._args: Parameters<VaultBackend["listKeyNames"]>): ReturnType<VaultBackend["listKeyNames"]> {
    return unused("listKeyNames");
  }
  getCertificate(..._args: Parameters<VaultBackend["getCertificate"]>): ReturnType<VaultBackend["getCertificate"]> {
    return unused("getCertificate");
  }
  sign(..._args: Parameters<VaultBackend["sign"]>): ReturnType<VaultBackend["sign"]> {
    return unused("sign");
  }
  decrypt(..._args: Parameters<VaultBackend["decrypt"]>): ReturnType<VaultBackend["decrypt"]> {
    return unused("decrypt");
  }
  getRandomBytes(..._args: Parameters<VaultBackend["getRandomBytes"]>): ReturnType<VaultBackend["getRandomBytes"]> {
    return unused("getRandomBytes");
  }
  listKeys(..._args: Parameters<VaultBackend["listKeys"]>): ReturnType<VaultBackend["listKeys"]> {
    return unused("listKeys");
  }
  listCertificateNames(..._args: Parameters<VaultBackend["listCertificateNames"]>): ReturnType<VaultBackend["listCertificateNames"]> {
    return unused("listCertificateNames");
  }
  createKey(..._args: Parameters<VaultBackend["createKey"]>): ReturnType<VaultBackend["createKey"]> {
    return unused("createKey");
  }
  importKey(..._args: Parameters<VaultBackend["importKey"]>): ReturnType<VaultBackend["importKey"]> {
    return unused("importKey");
  }
  updateKeyTags(..._args: Parameters<VaultBackend["updateKeyTags"]>): ReturnType<VaultBackend["updateKeyTags"]> {
    return unused("updateKeyTags");
  }
  deleteKey(..._args: Parameters<VaultBackend["deleteKey"]>): ReturnType<VaultBackend["deleteKey"]> {
    return unused("deleteKey");
  }
  listStoredCertificates(..._args: Parameters<VaultBackend["listStoredCertificates"]>): ReturnType<VaultBackend["listStoredCertificates"]> {
    return unused("listStoredCertificates");
  }
  getStoredCertificate(..._args: Parameters<VaultBackend["getStoredCertificate"]>): ReturnType<VaultBackend["getStoredCertificate"]> {
    return unused("getStoredCertificate");
  }
  storeCertificate(..._args: Parameters<VaultBackend["storeCertificate"]>): ReturnType<VaultBackend["storeCertificate"]> {
    return unused("storeCertificate");
  }
  deleteStoredCertificate(..._args: Parameters<VaultBackend["deleteStoredCertificate"]>): ReturnType<VaultBackend["deleteStoredCertificate"]> {
    return unused("deleteStoredCertificate");
  }
  encryptAes(..._args: Parameters<VaultBackend["encryptAes"]>): ReturnType<VaultBackend["encryptAes"]> {
    return unused("encryptAes");
  }
  decryptAes(..._args: Parameters<VaultBackend["decryptAes"]>): ReturnType<VaultBackend["decryptAes"]> {
    return unused("decryptAes");
  }
  wrapKey(..._args: Parameters<VaultBackend["wrapKey"]>): ReturnType<VaultBackend["wrapKey"]> {
    return unused("wrapKey");
  }
  unwrapKey(..._args: Parameters<VaultBackend["unwrapKey"]>): ReturnType<VaultBackend["unwrapKey"]> {
    return unused("unwrapKey");
  }
  async close(): Promise<void> {}
}
