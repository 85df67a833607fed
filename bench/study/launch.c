// study-launch: start one workload process of bench/study in its user's
// tree.  In order: join a cgroup (its cgroup.procs), turn on KSM for all of
// its anonymous memory (prctl(PR_SET_MEMORY_MERGE, 1): kept across execve
// and inherited by its children since Linux 6.7), chroot into the tree,
// chdir to the working directory, exec the command.  Static, so it needs
// nothing from the tree it enters.
//
//   study-launch [--ksm] [--cgroup DIR] [--cwd DIR] ROOT CMD [ARG...]
//
// Exit status: 2 usage, 3 cgroup, 4 prctl, 5 chroot/chdir, 127 exec.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

static int fail(int code, const char *what, const char *arg) {
	fprintf(stderr, "study-launch: %s %s: %s\n", what, arg, strerror(errno));
	return code;
}

int main(int argc, char **argv) {
	int ksm = 0, i = 1;
	const char *cgroup = NULL, *cwd = "/";
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--ksm")) {
			ksm = 1;
		} else if (!strcmp(argv[i], "--cgroup") && i + 1 < argc) {
			cgroup = argv[++i];
		} else if (!strcmp(argv[i], "--cwd") && i + 1 < argc) {
			cwd = argv[++i];
		} else {
			break;
		}
	}
	if (argc - i < 2) {
		fprintf(stderr, "usage: study-launch [--ksm] [--cgroup DIR] [--cwd DIR] ROOT CMD [ARG...]\n");
		return 2;
	}
	const char *root = argv[i], *cmd = argv[i + 1];
	if (cgroup) {
		char path[4096], pid[32];
		snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
		int fd = open(path, O_WRONLY);
		int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
		if (fd < 0 || write(fd, pid, n) != n) return fail(3, "joining cgroup", cgroup);
		close(fd);
	}
	if (ksm && prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0) return fail(4, "prctl(PR_SET_MEMORY_MERGE) for", cmd);
	if (chroot(root) != 0) return fail(5, "chroot", root);
	if (chdir(cwd) != 0) return fail(5, "chdir", cwd);
	execvp(cmd, argv + i + 1);
	return fail(127, "exec", cmd);
}
