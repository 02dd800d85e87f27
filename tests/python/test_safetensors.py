# test_safetensors.py - weights streamed by vram's own loader from safetensors files
# (one file, a sharded index, a directory) and bound by name to a module skeleton.
import json

import pytest
import torch

import gpu_manager
from conftest import (build_tiny, inputs, reference, unique, unique_state, used_bytes,
                      write_safetensors)


def skeleton_meta():
    m = build_tiny(99).to("meta")
    m.head.weight = m.embed.weight  # .to() unties; models re-tie (as HF's tie_weights())
    # non-persistent buffers are not in checkpoints: the skeleton computes them
    m._buffers["temperature"] = torch.tensor(1.0)
    return m


def skeleton_cpu():
    return build_tiny(123)  # other values: the checkpoint's must win


def checkpoint(tmp_path, seed=0, name="model.safetensors"):
    return write_safetensors(str(tmp_path / name), unique_state(build_tiny(seed)))


@pytest.mark.parametrize("skeleton", [skeleton_meta, skeleton_cpu])
def test_single_file(manager, tmp_path, skeleton):
    path = checkpoint(tmp_path)
    mm = manager.register_model(unique("st"))
    x = inputs()
    want = reference(0, x)
    model = mm.get_model(load_func=skeleton, model_name=mm.name, weights=path)
    info = mm.info()
    assert info.tensors == len(unique_state(build_tiny(0)))
    base = mm._base
    for n, p in model.named_parameters():
        assert base <= p.data_ptr() < base + info.bytes, n
    assert model.head.weight is model.embed.weight
    ptrs = [p.data_ptr() for p in model.parameters()]
    for _ in range(10):
        with torch.no_grad():
            assert torch.equal(model(x), want)
        mm.force_offload()
        assert used_bytes(manager) == 0
        assert [p.data_ptr() for p in model.parameters()] == ptrs
    assert mm.get_status()["source"] == path


def test_register_with_weights_and_sharded_index(manager, tmp_path):
    state = unique_state(build_tiny(0))
    names = list(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        write_safetensors(str(tmp_path / fname), {k: state[k] for k in keys})
        weight_map.update({k: fname for k in keys})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    x = inputs()
    for src in (str(index), str(tmp_path)):
        mm = manager.register_model(unique("sharded"), weights=src)
        model = mm.get_model(load_func=skeleton_meta)
        with torch.no_grad():
            assert torch.equal(model(x), reference(0, x))
        mm.release()
        assert used_bytes(manager) == 0
        with torch.no_grad():  # reloaded from the files, bound again
            assert torch.equal(model(x), reference(0, x))
        mm.release()


def mismatch(manager, tmp_path, edit, match):
    state = unique_state(build_tiny(0))
    edit(state)
    path = write_safetensors(str(tmp_path / ("bad-%s.safetensors" % unique("x"))), state)
    mm = manager.register_model(unique("bad"))
    with pytest.raises(gpu_manager.WeightsMismatch, match=match):
        mm.get_model(load_func=skeleton_meta, weights=path)
    assert mm.state == "unloaded" and used_bytes(manager) == 0
    assert mm.model is None
    return mm


def test_mismatching_checkpoints(manager, tmp_path):
    def shape(s):
        s["blocks.0.attn.qkv.weight"] = torch.zeros(96, 31)

    def dtype(s):
        s["norm.weight"] = s["norm.weight"].double()

    def missing(s):
        del s["blocks.1.down.bias"]

    def extra(s):
        s["blocks.7.attn.qkv.weight"] = torch.zeros(3)

    mismatch(manager, tmp_path, shape, r"'blocks\.0\.attn\.qkv\.weight' has shape \[96, 31\]")
    mismatch(manager, tmp_path, dtype, r"'norm\.weight' has dtype F64")
    mismatch(manager, tmp_path, missing, r"'blocks\.1\.down\.bias'.*missing")
    mm = mismatch(manager, tmp_path, extra, r"'blocks\.7\.attn\.qkv\.weight'.*not in the module")
    # the same model then loads from a good checkpoint
    good = checkpoint(tmp_path, name="good.safetensors")
    model = mm.get_model(load_func=skeleton_meta, weights=good)
    with torch.no_grad():
        assert torch.equal(model(inputs()), reference(0))


def test_tied_weights_stored_under_the_second_name(manager, tmp_path):
    state = unique_state(build_tiny(0))
    state["head.weight"] = state.pop("embed.weight")
    path = write_safetensors(str(tmp_path / "tied.safetensors"), state)
    mm = manager.register_model(unique("tied"), weights=path)
    model = mm.get_model(load_func=skeleton_meta)
    assert model.head.weight is model.embed.weight
    with torch.no_grad():
        assert torch.equal(model(inputs()), reference(0))


def test_malformed_file_is_a_format_error(manager, tmp_path):
    p = tmp_path / "broken.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    name = unique("broken")
    with pytest.raises(gpu_manager.FormatError, match="not valid JSON") as ei:
        manager.register_model(name, weights=str(p))  # the header is read at registration
    assert ei.value.code == -9 and ei.value.name == "EFORMAT"
    assert name not in manager.managers and name not in manager.get_all_status()
