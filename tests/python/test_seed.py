# test_seed.py - the seed's Python code as written (方式三, multi-model coordination,
# exception safety, troubleshooting), on real torch.nn modules.
import torch

from conftest import build_tiny, inputs, reference, used_bytes


def load_llasa():
    # the seed builds Llasa-8B with transformers on 'cuda'; here a small
    # transformer on the CPU (the host backend's device memory is host memory)
    return build_tiny(seed=8)


def load_codec():
    return build_tiny(seed=2, d=16, heads=2, layers=1)


def test_seed_three_steps_verbatim():
    from gpu_manager import get_global_manager

    # 获取全局管理器
    gpu_manager = get_global_manager(idle_timeout=600)

    # 注册模型
    llasa_manager = gpu_manager.register_model("Llasa-8B")

    def run(data):
        # 使用模型（标准 3 步流程）
        try:
            # 步骤 1: 懒加载
            model = llasa_manager.get_model(load_func=load_llasa, model_name="Llasa-8B")

            # 步骤 2: 处理
            result = model.generate(data)

            # 步骤 3: 立即卸载（关键！）
            llasa_manager.force_offload()

            return result

        except Exception as e:
            # 异常时也要卸载
            llasa_manager.force_offload()
            raise e

    x = inputs()
    expected = build_tiny(seed=8).generate(x)
    for _ in range(3):
        assert torch.equal(run(x), expected)
        assert llasa_manager.location == "CPU"

    # 更新超时时间
    gpu_manager.update_all_timeout(new_timeout=300)

    # 查看当前状态
    status = gpu_manager.get_all_status()
    print(status)
    s = status["Llasa-8B"]
    for key in ("model_name", "location", "idle_time_seconds", "idle_timeout_seconds",
                "monitor_running", "gpu_memory"):
        assert key in s
    assert s["model_name"] == "Llasa-8B"
    assert s["location"] == "CPU"
    assert s["idle_timeout_seconds"] == 300
    assert s["monitor_running"] is True
    g0 = s["gpu_memory"]["GPU_0"]
    assert set(g0) >= {"allocated_gb", "reserved_gb", "total_gb"}
    assert s["loads"] == 1 and s["offloads"] == 3 and s["restores"] == 2

    # 检查监控状态 (the troubleshooting section)
    gpu_manager = get_global_manager(idle_timeout=600)
    status = gpu_manager.get_all_status()
    print(status['monitor_running'])  # 应该是 True
    assert status['monitor_running'] is True
    assert "monitor_running" not in list(status)  # iteration shows models only

    # 手动启动（如果需要）
    for manager in gpu_manager.managers.values():
        manager.start_monitor()


def test_seed_issue_flow():
    from gpu_manager import get_global_manager
    gpu_manager = get_global_manager(idle_timeout=600)
    llasa_manager = gpu_manager.register_model("Llasa-8B-issue")
    inputs_ = inputs(seed=5)
    model = llasa_manager.get_model(load_func=load_llasa, model_name="Llasa-8B-issue")
    result = model(inputs_)
    llasa_manager.force_offload()
    gpu_manager.update_all_timeout(new_timeout=300)
    status = gpu_manager.get_all_status()
    print(status['monitor_running'])
    assert status['monitor_running'] is True
    assert status["Llasa-8B-issue"]["location"] == "CPU"
    assert isinstance(model, torch.nn.Module)
    assert torch.equal(result, reference(seed=8, x=inputs_))
    for manager in gpu_manager.managers.values():
        manager.start_monitor()


def test_seed_exception_safety():
    from gpu_manager import get_global_manager
    gpu_manager = get_global_manager(idle_timeout=600)
    manager = gpu_manager.register_model("ModelName")

    def task(data):
        try:
            model = manager.get_model(load_llasa, "ModelName")
            result = model(data)  # raises: token ids out of range
            manager.force_offload()  # 正常完成后卸载
            return result
        except Exception as e:
            manager.force_offload()  # 异常时也要卸载
            raise e

    bad = torch.full((1, 4), 10_000, dtype=torch.long)
    for _ in range(2):
        try:
            task(bad)
        except (IndexError, RuntimeError):
            pass
        else:
            raise AssertionError("the bad input did not raise")
        assert manager.location == "CPU"
        assert manager.get_status()["leases"] == 0
    assert torch.equal(task(inputs()), reference(seed=8))


def test_seed_two_model_coordination(manager):
    gpu_manager = manager
    data = inputs(seed=3, vocab=61)
    ref_codec, ref_llasa = load_codec(), load_llasa()
    with torch.no_grad():
        want_encoded = ref_codec.encode(data)
        want_generated = ref_llasa.generate(want_encoded.argmax(-1) % 61)
        want_decoded = ref_codec.decode(ref_codec.encode(want_generated))

    # 注册多个模型
    codec_manager = gpu_manager.register_model("XCodec2")
    llasa_manager = gpu_manager.register_model("Llasa-8B")

    # 交替使用，避免同时占用
    codec_model = codec_manager.get_model(load_codec, "XCodec2")
    encoded = codec_model.encode(data)
    codec_manager.force_offload()  # 用完就卸载
    assert codec_manager.location == "CPU"

    llasa_model = llasa_manager.get_model(load_llasa, "Llasa-8B")
    generated = llasa_model.generate(encoded.argmax(-1) % 61)
    llasa_manager.force_offload()  # 用完就卸载
    assert llasa_manager.location == "CPU"
    assert used_bytes(gpu_manager) == 0

    # 再次需要 codec 时，快速恢复
    codec_model2 = codec_manager.get_model(load_codec, "XCodec2")
    decoded = codec_model2.decode(codec_model2.encode(generated))
    codec_manager.force_offload()

    assert codec_model2 is codec_model
    assert torch.equal(encoded, want_encoded)
    assert torch.equal(generated, want_generated)
    assert torch.equal(decoded, want_decoded)
    st = gpu_manager.get_all_status()
    assert st["XCodec2"]["location"] == "CPU" and st["Llasa-8B"]["location"] == "CPU"
    assert st["XCodec2"]["loads"] == 1 and st["XCodec2"]["restores"] == 1
