// cid-oci-hook: the program the runtime starts (hooks.d/50-cid.json).
//
// The hook's work needs libmount, SQLite and the index; a process that
// loads them costs more at every container start than the work itself on an
// indexed stack (container-hooks/README.md, "Start-up").  So this program
// is small and static (libc only).  When cidd is running it hands the run
// to cidd: its arguments, the hook environment cidd cannot see
// (CID_INDEX, CID_SOCKET, CID_HOOK_BUDGET_MS), the state read from stdin,
// and, as file descriptors, its mount namespace and working directory, so
// that cidd's thread resolves every path as this process would.  cidd runs
// the hook (oci_hook.cc) and answers with its exit status, stdout and
// stderr, which are passed on as they are.
//
// Anything else runs cid-oci-hook-standalone (the same work in a process of
// its own, next to this program, or $CID_OCI_HOOK_STANDALONE) with the same
// arguments and the state on stdin: no cidd at --socket, a cidd that does
// not know the request (older) or refuses it (cannot enter the mount
// namespace, busy), or one that does not answer in time (the budget plus
// --cidd-timeout-ms plus a second).  --help, a terminal on stdin and
// arguments this program cannot read go there directly: the standalone
// hook is the one that explains them.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define STATE_MAX (16u << 20)  // as the standalone hook: no real state is this large
#define ANSWER_MAX (64u << 20)

static const char kDefaultSocket[] = "/run/cid/cidd.sock";

struct buf {
  char *p;
  size_t len, cap;
};

static int buf_add(struct buf *b, const void *data, size_t len) {
  if (b->len + len + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + len + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, len);
  b->len += len;
  b->p[b->len] = 0;
  return 0;
}

static int buf_str(struct buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

// A JSON string.  Bytes >= 0x80 pass as they are: a name that is not UTF-8
// makes the request one cidd cannot parse, and the standalone hook runs.
static int buf_json(struct buf *b, const char *s) {
  if (buf_str(b, "\"")) return -1;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      esc[2] = 0;
    } else if (c < 0x20) {
      snprintf(esc, sizeof(esc), "\\u%04x", c);
    } else {
      esc[0] = (char)c;
      esc[1] = 0;
    }
    if (buf_str(b, esc)) return -1;
  }
  return buf_str(b, "\"");
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Waits for `events` on fd until deadline: 0, or -1 once it passed.
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return -1;
    struct pollfd p = {fd, events, 0};
    int n = poll(&p, 1, (int)left);
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return -1;
  }
}

static int parse_ms(const char *s, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 0 || v > 600000) return -1;
  *out = v;
  return 0;
}

static int fail_closed(char **argv) {
  for (char **a = argv + 1; *a; a++)
    if (!strcmp(*a, "--fail-closed")) return 1;
  return 0;
}

static char *g_state;
static size_t g_state_len;

// Runs the standalone hook with our arguments and the state on its stdin
// (a memfd: the state was read from ours).  Only returns if that fails.
static int run_standalone(char **argv, int state_read) {
  char path[PATH_MAX];
  const char *env = getenv("CID_OCI_HOOK_STANDALONE");
  if (env && *env) {
    snprintf(path, sizeof(path), "%s", env);
  } else {
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 64);
    if (n <= 0) {
      fprintf(stderr, "cid-oci-hook: /proc/self/exe: %s (container not blocked)\n", strerror(errno));
      return fail_closed(argv);
    }
    path[n] = 0;
    char *slash = strrchr(path, '/');
    strcpy(slash ? slash + 1 : path, "cid-oci-hook-standalone");
  }
  if (state_read) {
    int fd = memfd_create("cid-oci-state", MFD_CLOEXEC);
    size_t off = 0;
    while (fd >= 0 && off < g_state_len) {
      ssize_t n = write(fd, g_state + off, g_state_len - off);
      if (n <= 0) break;
      off += (size_t)n;
    }
    if (fd < 0 || off < g_state_len || lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, STDIN_FILENO) < 0) {
      fprintf(stderr, "cid-oci-hook: passing the state on: %s (container not blocked)\n", strerror(errno));
      return fail_closed(argv);
    }
    close(fd);
  }
  execv(path, argv);
  int closed = fail_closed(argv);
  fprintf(stderr, "cid-oci-hook: %s: %s%s\n", path, strerror(errno),
          closed ? "" : " (container not blocked)");
  return closed;
}

// The number after "key": in cidd's one-line answer, or -1.
static long long answer_field(const char *answer, const char *key) {
  char pat[64];
  snprintf(pat, sizeof(pat), "\"%s\":", key);
  const char *p = strstr(answer, pat);
  if (!p) return -1;
  char *end;
  long long v = strtoll(p + strlen(pat), &end, 10);
  return end == p + strlen(pat) || v < 0 ? -1 : v;
}

// Hands the run to cidd: its exit status, or -1 to run the standalone hook
// (with the reason in *why, if any is worth saying).
static int run_in_cidd(char **argv, const char *socket_path, int64_t deadline, char *why, size_t why_len) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(socket_path) >= sizeof(addr.sun_path)) return -1;
  strcpy(addr.sun_path, socket_path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  int rc = -1;
  int ns = -1, cwd = -1;
  struct buf req = {0}, in = {0};
  if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) goto out;  // no cidd: the standalone hook says so
    if (wait_fd(fd, POLLOUT, deadline)) goto out;
  }
  ns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
  cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (ns < 0 || cwd < 0) goto out;

  if (buf_str(&req, "{\"op\":\"oci-hook\",\"args\":[")) goto out;
  for (char **a = argv; *a; a++)
    if ((a != argv && buf_str(&req, ",")) || buf_json(&req, *a)) goto out;
  if (buf_str(&req, "],\"env\":{")) goto out;
  static const char *const kEnv[] = {"CID_INDEX", "CID_SOCKET", "CID_HOOK_BUDGET_MS"};
  int first = 1;
  for (size_t i = 0; i < sizeof(kEnv) / sizeof(kEnv[0]); i++) {
    const char *v = getenv(kEnv[i]);
    if (!v) continue;
    if ((!first && buf_str(&req, ",")) || buf_json(&req, kEnv[i]) || buf_str(&req, ":") || buf_json(&req, v)) goto out;
    first = 0;
  }
  char tail[64];
  snprintf(tail, sizeof(tail), "},\"state_bytes\":%zu}\n", g_state_len);
  if (buf_str(&req, tail) || buf_add(&req, g_state, g_state_len)) goto out;

  // The descriptors travel with the first byte.
  size_t off = 0;
  while (off < req.len) {
    struct iovec iov = {req.p + off, req.len - off};
    union {
      char b[CMSG_SPACE(2 * sizeof(int))];
      struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (off == 0) {
      msg.msg_control = control.b;
      msg.msg_controllen = sizeof(control.b);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(2 * sizeof(int));
      int fds[2] = {ns, cwd};
      memcpy(CMSG_DATA(c), fds, sizeof(fds));
    }
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (wait_fd(fd, POLLOUT, deadline)) goto timeout;
    } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      break;  // refused at once (SO_PEERCRED): the answer below says why
    } else {
      goto out;
    }
  }

  // {"exit":N,"ok":true,"stderr_bytes":E,"stdout_bytes":O}\n, then the
  // bytes; or {"error":...,"ok":false}\n.
  char chunk[65536];
  char *nl = NULL;
  long long out_bytes = 0, err_bytes = 0, code = -1;
  size_t header = 0;
  for (;;) {
    if (!nl && in.len) nl = memchr(in.p, '\n', in.len);
    if (nl && !header) {
      *nl = 0;
      header = (size_t)(nl - in.p) + 1;
      if (!strstr(in.p, "\"ok\":true")) {
        const char *e = strstr(in.p, "\"error\":");
        snprintf(why, why_len, "cidd did not run the hook: %s", e ? e + 8 : in.p);
        goto out;
      }
      code = answer_field(in.p, "exit");
      out_bytes = answer_field(in.p, "stdout_bytes");
      err_bytes = answer_field(in.p, "stderr_bytes");
      if (code < 0 || code > 255 || out_bytes < 0 || err_bytes < 0 ||
          (unsigned long long)(out_bytes + err_bytes) > ANSWER_MAX) {
        snprintf(why, why_len, "cidd's answer is malformed: %s", in.p);
        goto out;
      }
    }
    if (header && in.len - header >= (size_t)(out_bytes + err_bytes)) break;
    if (in.len > ANSWER_MAX + 4096) goto out;
    ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n > 0) {
      if (buf_add(&in, chunk, (size_t)n)) goto out;
      if (nl) nl = in.p + header - 1;  // buf_add may move the buffer
    } else if (n == 0) {
      snprintf(why, why_len, "cidd closed the connection without an answer");
      goto out;
    } else if (errno == EAGAIN || errno == EINTR) {
      if (wait_fd(fd, POLLIN, deadline)) goto timeout;
    } else {
      goto out;
    }
  }
  fwrite(in.p + header, 1, (size_t)out_bytes, stdout);
  fwrite(in.p + header + out_bytes, 1, (size_t)err_bytes, stderr);
  fflush(stdout);
  rc = (int)code;
  goto out;
timeout:
  snprintf(why, why_len, "cidd did not answer in time");
out:
  free(req.p);
  free(in.p);
  if (ns >= 0) close(ns);
  if (cwd >= 0) close(cwd);
  close(fd);
  return rc;
}

// The standalone hook's options that take a value (see its --help).
static const char *const kValued[] = {"--index",        "--socket",   "--budget-ms", "--cidd-timeout-ms", "--journal",
                                      "--storage-root", "--mountinfo", "--min-size", "--log"};

int main(int argc, char **argv) {
  (void)argc;
  // A runtime that closed our stdout or stderr must not see us die of it.
  signal(SIGPIPE, SIG_IGN);
  const char *socket_path = getenv("CID_SOCKET");
  if (!socket_path || !*socket_path) socket_path = kDefaultSocket;
  long budget = 200, cidd_timeout = 500;
  const char *b = getenv("CID_HOOK_BUDGET_MS");
  if (b && *b && parse_ms(b, &budget)) return run_standalone(argv, 0);
  // Only what this program needs is read: where cidd is and how long to
  // wait.  Whole option names only; --help, an abbreviation (getopt_long
  // takes them) or a missing value goes to the standalone hook, which
  // explains or reads it right.
  for (char **a = argv + 1; *a; a++) {
    const char *opt = *a;
    if (strncmp(opt, "--", 2)) continue;  // an option's value, or an argument the hook refuses
    if (!strcmp(opt, "--help")) return run_standalone(argv, 0);
    const char *eq = strchr(opt, '=');
    size_t name_len = eq ? (size_t)(eq - opt) : strlen(opt);
    const char *name = NULL;
    for (size_t i = 0; i < sizeof(kValued) / sizeof(kValued[0]); i++)
      if (strlen(kValued[i]) == name_len && !strncmp(opt, kValued[i], name_len)) name = kValued[i];
    if (!name) {
      for (size_t i = 0; i < sizeof(kValued) / sizeof(kValued[0]); i++)
        if (name_len < strlen(kValued[i]) && !strncmp(opt, kValued[i], name_len)) return run_standalone(argv, 0);
      continue;  // a flag
    }
    const char *val = eq ? eq + 1 : *++a;
    if (!val) return run_standalone(argv, 0);
    if (!strcmp(name, "--socket")) {
      socket_path = val;
    } else if ((!strcmp(name, "--budget-ms") && parse_ms(val, &budget)) ||
               (!strcmp(name, "--cidd-timeout-ms") && parse_ms(val, &cidd_timeout))) {
      return run_standalone(argv, 0);
    }
  }
  if (isatty(STDIN_FILENO)) return run_standalone(argv, 0);

  struct buf state = {0};
  char chunk[65536];
  ssize_t n;
  while ((n = read(STDIN_FILENO, chunk, sizeof(chunk))) > 0) {
    if (buf_add(&state, chunk, (size_t)n)) {
      fprintf(stderr, "cid-oci-hook: out of memory\n");
      return fail_closed(argv) ? 1 : 0;
    }
    if (state.len > STATE_MAX) break;
  }
  g_state = state.p ? state.p : "";
  g_state_len = state.len;

  char why[512] = "";
  int code = run_in_cidd(argv, socket_path, now_ms() + budget + cidd_timeout + 1000, why, sizeof(why));
  if (code >= 0) return code;
  if (why[0]) fprintf(stderr, "cid-oci-hook: %s; running the hook here\n", why);
  return run_standalone(argv, 1);
}
