/* A long-lived NSS host for test/clients/nss-respawn.test.ts: it loads the PKCS#11 module into NSS once, finds the
 * token's private key once (PK11_ListPrivKeysInSlot), then signs with that same SECKEYPrivateKey for every stdin
 * line, so the test can kill the module's helper between two signatures.
 *   sign <hex bytes>  ->  SIGNED <hex signature>  |  FAILED <NSS error name>
 * PK11_Sign signs the bytes as given: a DER DigestInfo for an RSA key (CKM_RSA_PKCS), a hash for an EC key
 * (CKM_ECDSA, r||s).
 * Usage: nss-signer <module path> <token label> */
#include <nss.h>
#include <pk11pub.h>
#include <prerror.h>
#include <keyhi.h>
#include <secerr.h>
#include <secmod.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *error_name(void) {
  const char *name = PR_ErrorToName(PR_GetError());
  return name != NULL ? name : "unknown error";
}

static int from_hex(const char *hex, unsigned char *out, size_t cap, size_t *len) {
  size_t n = strlen(hex);
  if (n % 2 != 0 || n / 2 > cap) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned int byte;
    if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return -1;
    out[i] = (unsigned char)byte;
  }
  *len = n / 2;
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <module path> <token label>\n", argv[0]);
    return 2;
  }
  if (NSS_NoDB_Init(NULL) != SECSuccess) {
    fprintf(stderr, "NSS_NoDB_Init: %s\n", error_name());
    return 1;
  }
  char spec[4096];
  snprintf(spec, sizeof spec, "library=\"%s\" name=\"akv-respawn\"", argv[1]);
  SECMODModule *module = SECMOD_LoadUserModule(spec, NULL, PR_FALSE);
  if (module == NULL || !module->loaded) {
    fprintf(stderr, "SECMOD_LoadUserModule: %s\n", error_name());
    return 1;
  }
  PK11SlotInfo *slot = PK11_FindSlotByName(argv[2]);
  if (slot == NULL) {
    fprintf(stderr, "PK11_FindSlotByName(%s): %s\n", argv[2], error_name());
    return 1;
  }
  SECKEYPrivateKeyList *keys = PK11_ListPrivKeysInSlot(slot, NULL, NULL);
  if (keys == NULL || PRIVKEY_LIST_END(PRIVKEY_LIST_HEAD(keys), keys)) {
    fprintf(stderr, "no private key on %s: %s\n", argv[2], error_name());
    return 1;
  }
  SECKEYPrivateKey *key = PRIVKEY_LIST_HEAD(keys)->key;
  printf("READY %ld %lu\n", (long)getpid(), (unsigned long)key->pkcs11ID);
  fflush(stdout);

  char line[8192];
  while (fgets(line, sizeof line, stdin) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    unsigned char data[1024];
    size_t len;
    if (strncmp(line, "sign ", 5) != 0 || from_hex(line + 5, data, sizeof data, &len) != 0) {
      printf("FAILED bad command\n");
      fflush(stdout);
      continue;
    }
    int sig_len = PK11_SignatureLen(key);
    if (sig_len <= 0) {
      printf("FAILED PK11_SignatureLen: %s\n", error_name());
      fflush(stdout);
      continue;
    }
    SECItem digest = {siBuffer, data, (unsigned int)len};
    SECItem signature = {siBuffer, malloc((size_t)sig_len), (unsigned int)sig_len};
    if (signature.data == NULL) return 1;
    if (PK11_Sign(key, &signature, &digest) != SECSuccess) {
      printf("FAILED %s\n", error_name());
    } else {
      printf("SIGNED ");
      for (unsigned int i = 0; i < signature.len; i++) printf("%02x", signature.data[i]);
      printf("\n");
    }
    fflush(stdout);
    free(signature.data);
  }

  SECKEY_DestroyPrivateKeyList(keys);
  PK11_FreeSlot(slot);
  SECMOD_UnloadUserModule(module);
  SECMOD_DestroyModule(module);
  return NSS_Shutdown() == SECSuccess ? 0 : 1;
}
