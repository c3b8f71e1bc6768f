#include "lock.h"

#include <string.h>

CK_RV lock_init(struct lock *lock, const CK_C_INITIALIZE_ARGS *args) {
  memset(lock, 0, sizeof *lock);
  if (args != NULL && args->CreateMutex != NULL) {
    lock->uses_app_callbacks = 1;
    lock->create_mutex = args->CreateMutex;
    lock->destroy_mutex = args->DestroyMutex;
    lock->lock_mutex = args->LockMutex;
    lock->unlock_mutex = args->UnlockMutex;
    return lock->create_mutex(&lock->app_mutex);
  }
  return pthread_mutex_init(&lock->os_mutex, NULL) == 0 ? CKR_OK : CKR_CANT_LOCK;
}

CK_RV lock_acquire(struct lock *lock) {
  if (lock->uses_app_callbacks) return lock->lock_mutex(lock->app_mutex);
  return pthread_mutex_lock(&lock->os_mutex) == 0 ? CKR_OK : CKR_CANT_LOCK;
}

void lock_release(struct lock *lock) {
  if (lock->uses_app_callbacks) {
    lock->unlock_mutex(lock->app_mutex);
  } else {
    pthread_mutex_unlock(&lock->os_mutex);
  }
}

void lock_destroy(struct lock *lock) {
  if (lock->uses_app_callbacks) {
    lock->destroy_mutex(lock->app_mutex);
  } else {
    pthread_mutex_destroy(&lock->os_mutex);
  }
}
