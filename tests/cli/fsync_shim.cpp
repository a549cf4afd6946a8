// An LD_PRELOAD shim for the CLI tests (issue 20 item 5): logs every fsync, rename and link the
// process makes, in order, to the file named by TOKEMB_SHIM_LOG, then does the real call. A
// line is "fsync REG|DIR|OTHER <path>", "renameat <from> <to>" or "linkat <to>".
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern "C" {

static void log_line(const char* fmt, ...) {
  const char* path = getenv("TOKEMB_SHIM_LOG");
  if (path == NULL) return;
  FILE* f = fopen(path, "a");
  if (f == NULL) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fclose(f);
}

static void fd_path(int fd, char* out, size_t n) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t len = readlink(link, out, n - 1);
  out[len > 0 ? len : 0] = '\0';
}

static void log_fsync(const char* what, int fd) {
  struct stat st;
  const char* type = "OTHER";
  if (fstat(fd, &st) == 0)
    type = S_ISREG(st.st_mode) ? "REG" : S_ISDIR(st.st_mode) ? "DIR" : "OTHER";
  char p[PATH_MAX];
  fd_path(fd, p, sizeof p);
  log_line("%s %s %s", what, type, p);
}

int fsync(int fd) {
  static int (*real)(int) = NULL;
  if (real == NULL) real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fsync"));
  int rc = real(fd);
  if (rc == 0) log_fsync("fsync", fd);
  return rc;
}

int fdatasync(int fd) {
  static int (*real)(int) = NULL;
  if (real == NULL) real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fdatasync"));
  int rc = real(fd);
  if (rc == 0) log_fsync("fsync", fd);
  return rc;
}

int renameat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath) {
  static int (*real)(int, const char*, int, const char*) = NULL;
  if (real == NULL)
    real =
        reinterpret_cast<int (*)(int, const char*, int, const char*)>(dlsym(RTLD_NEXT, "renameat"));
  int rc = real(olddirfd, oldpath, newdirfd, newpath);
  if (rc == 0) log_line("renameat %s %s", oldpath, newpath);
  return rc;
}

int rename(const char* oldpath, const char* newpath) {
  static int (*real)(const char*, const char*) = NULL;
  if (real == NULL)
    real = reinterpret_cast<int (*)(const char*, const char*)>(dlsym(RTLD_NEXT, "rename"));
  int rc = real(oldpath, newpath);
  if (rc == 0) log_line("renameat %s %s", oldpath, newpath);
  return rc;
}

int linkat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags) {
  static int (*real)(int, const char*, int, const char*, int) = NULL;
  if (real == NULL)
    real = reinterpret_cast<int (*)(int, const char*, int, const char*, int)>(
        dlsym(RTLD_NEXT, "linkat"));
  int rc = real(olddirfd, oldpath, newdirfd, newpath, flags);
  if (rc == 0) log_line("linkat %s", newpath);
  return rc;
}

}  // extern "C"
