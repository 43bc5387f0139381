/* poll.h: --model-control-mode poll: a thread that rescans the model repository every
 * --repository-poll-secs and on SIGHUP, and loads, reloads or unloads models through the model
 * manager (ox_models_load / ox_models_unload, the same path as an explicit load).
 *
 * The rule for a change (see poll.c for the details): a model directory's signature (size, mtime
 * in ns and inode of every file in its version directories and of config.json / config.pbtxt,
 * plus a content hash) must be the same at two consecutive scans, and no file of it may still be
 * being written (inotify: modified since its last close-after-write, or created in a directory
 * the watch did not see yet and still open for writing in some process). A file moved into place
 * by rename is complete at once. A failed load is not retried until the signature changes again.
 */
#ifndef OX_INFER_POLL_H
#define OX_INFER_POLL_H

#include "infer/models.h"

typedef struct ox_poll ox_poll_t;

/* Starts the poller on repository root (copied) for mgr (borrowed: outlives the poller). The
 * models loaded now are the baseline: only later changes are applied. secs 0: no timer (SIGHUP
 * only). 0, or OX_ENOMEM / OX_EIO (inotify or the thread could not be set up). */
int ox_poll_start(ox_models_t *mgr, const char *root, long secs, ox_poll_t **out);
/* Any thread: asks for a rescan now (SIGHUP). */
void ox_poll_rescan(ox_poll_t *p);
/* Stops and joins the thread, frees everything. NULL is a no-op. */
void ox_poll_stop(ox_poll_t *p);

#endif
