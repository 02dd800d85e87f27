/* st_write.h - the tools' synthetic safetensors model writer (vramctl, tests, benchmarks). */
#ifndef VRAM_TOOLS_ST_WRITE_H
#define VRAM_TOOLS_ST_WRITE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Writes a synthetic LLaMA-like model of about total_bytes (tensors
 * model.embed_tokens.weight, model.layers.N.{self_attn.{q,k,v,o}_proj,
 * mlp.{gate,up,down}_proj,input_layernorm,post_attention_layernorm}.weight,
 * model.norm.weight, lm_head.weight). dtypes is a comma list ("BF16,F32";
 * NULL or "" = "BF16") of safetensors dtype names; tensor i takes
 * dtypes[i % count]. Data bytes are vram_synthetic_fill(seed, offset, ...)
 * where offset counts the data bytes of all tensors written before (across
 * shards), so a model holds the bytes of synthetic:SIZE:SEED. Headers are
 * padded with spaces to a multiple of 8 and carry __metadata__
 * {"format":"pt"}.
 *
 * shards <= 1: out_path is the file (or, when it is a directory,
 * out_path/model.safetensors). shards > 1: out_path is a directory (created
 * when missing) that receives model-0000K-of-0000N.safetensors and
 * model.safetensors.index.json (metadata.total_size = the sum of tensor
 * bytes).
 *
 * Returns 0, or VRAM_EINVAL / VRAM_EIO / VRAM_EHOSTMEM with a message in
 * err (errlen bytes; err may be NULL) that is also the calling thread's
 * vram_last_error(); files half-written by a failed call are removed.
 */
int st_make_model(const char *out_path, uint64_t total_bytes, const char *dtypes, uint64_t seed,
                  int shards, char *err, size_t errlen);

#endif /* VRAM_TOOLS_ST_WRITE_H */
