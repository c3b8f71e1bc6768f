// peerCredentials(fd): the pid, uid and gid of the process at the other end of a connected Unix socket, as the
// kernel recorded them at connect() or socketpair() (SO_PEERCRED). The signing agent needs the uid to refuse other
// users, and Node has no API for it.
#include <napi.h>

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace {

// Shaped like Node's own system errors (code, errno, syscall) so callers can treat it as one.
Napi::Value ThrowErrno(Napi::Env env, int err) {
  const char *name = strerrorname_np(err);
  std::string code = name ? name : "E" + std::to_string(err);
  Napi::Error error = Napi::Error::New(env, code + ": " + std::strerror(err) + ", getsockopt SO_PEERCRED");
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -err));  // negative, as in Node and util.getSystemErrorName()
  error.Set("syscall", Napi::String::New(env, "getsockopt"));
  error.ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value PeerCredentials(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  // Int32Value() turns NaN, 3.5 or 2^40 into some other descriptor, so only an exact int32 is accepted.
  bool valid = info.Length() == 1 && info[0].IsNumber();
  int fd = valid ? info[0].As<Napi::Number>().Int32Value() : -1;
  if (!valid || fd != info[0].As<Napi::Number>().DoubleValue()) {
    Napi::TypeError::New(env, "peerCredentials(fd): fd must be an integer file descriptor").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct ucred cred;
  socklen_t length = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return ThrowErrno(env, errno);
  Napi::Object result = Napi::Object::New(env);
  result.Set("pid", Napi::Number::New(env, cred.pid));
  result.Set("uid", Napi::Number::New(env, cred.uid));
  result.Set("gid", Napi::Number::New(env, cred.gid));
  return result;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  return exports;
}

}  // namespace

NODE_API_MODULE(peercred, Init)
