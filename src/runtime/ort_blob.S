/* ort_blob.S: the bytes of libonnxruntime.so.1 inside the single-file onnxd, and their SHA-256.
 *
 * Assembled only by the single-file build (the Makefile's `make single`), which defines
 *   OX_ORT_BLOB         the library's path, as a quoted string ("/.../libonnxruntime.so.1")
 *   OX_ORT_BLOB_SHA256  its SHA-256 in lower-case hex, as a quoted string, computed from the
 *                       same file in the same recipe (sha256sum).
 * runtime/ort_embed.c copies the bytes into a sealed memfd, checks the digest and dlopens it.
 */
#if !defined(OX_ORT_BLOB) || !defined(OX_ORT_BLOB_SHA256)
#error "ort_blob.S is assembled by the single-file build, which defines OX_ORT_BLOB and OX_ORT_BLOB_SHA256"
#endif

	.section .rodata.ox_ort_blob, "a", @progbits
	.balign 64
	.globl ox_ort_blob
	.type ox_ort_blob, @object
ox_ort_blob:
	.incbin OX_ORT_BLOB
	.globl ox_ort_blob_end
ox_ort_blob_end:
	.size ox_ort_blob, ox_ort_blob_end - ox_ort_blob

	.section .rodata.ox_ort_blob_sha256, "a", @progbits
	.globl ox_ort_blob_sha256
	.type ox_ort_blob_sha256, @object
ox_ort_blob_sha256:
	.asciz OX_ORT_BLOB_SHA256
	.size ox_ort_blob_sha256, . - ox_ort_blob_sha256

	/* no executable stack */
	.section .note.GNU-stack, "", @progbits
