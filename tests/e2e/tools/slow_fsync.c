/* Slow-disk shim for reproducing liveness problems by hand: every fsync/fdatasync of a
 * process sleeps SLOW_FSYNC_US microseconds first. Not built by cargo.
 *
 *   gcc -shared -fPIC -o /tmp/slow_fsync.so tests/e2e/tools/slow_fsync.c -ldl
 *   cargo build -p kv-server --bin kvserver
 *   KV_E2E_NO_BUILD=1 LD_PRELOAD=/tmp/slow_fsync.so SLOW_FSYNC_US=250000 \
 *     cargo test -p kv-e2e --test cluster a_node_behind
 *
 * (KV_E2E_NO_BUILD keeps the tests from running cargo, whose own fsyncs would crawl.)
 * Before commit 00f5e8a that test lost every shard's leader for 15 s at 250 ms. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

static useconds_t delay_us(void) {
    const char *s = getenv("SLOW_FSYNC_US");
    return s ? (useconds_t)atol(s) : 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    usleep(delay_us());
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    usleep(delay_us());
    return real(fd);
}
