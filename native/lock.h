/* The library's global lock (it serialises writes to the helper socket). It is the application's mutex when
 * C_Initialize received mutex callbacks, and a pthread mutex otherwise. Waiting for replies never uses it. */
#ifndef AKV_LOCK_H
#define AKV_LOCK_H

#include <pthread.h>

#include "pkcs11_3.h"

struct lock {
  int uses_app_callbacks;
  CK_CREATEMUTEX create_mutex;
  CK_DESTROYMUTEX destroy_mutex;
  CK_LOCKMUTEX lock_mutex;
  CK_UNLOCKMUTEX unlock_mutex;
  void *app_mutex;
  pthread_mutex_t os_mutex;
};

/* args may be NULL. Returns the application's CreateMutex result when it fails. */
CK_RV lock_init(struct lock *lock, const CK_C_INITIALIZE_ARGS *args);
CK_RV lock_acquire(struct lock *lock);
void lock_release(struct lock *lock);
void lock_destroy(struct lock *lock);

#endif
