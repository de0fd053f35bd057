"""The demo and the speed benchmark run end to end."""

from benchmarks import elm_neuron_speed
from elmnet.demo import synthetic_neuronio_input


def test_demo_writes_plot_with_released_model(released_models_dir, tmp_path, cli):
    out = tmp_path / "demo.png"
    model = released_models_dir / "num_memory_20"
    result = cli("elmnet.demo", "--model", model, "--out", out, "--duration-ms", 300)
    assert result.returncode == 0, result.stderr
    assert "8002 parameters" in result.stdout
    assert out.stat().st_size > 10_000


def test_demo_unknown_model_is_a_clear_error(tmp_path, cli):
    result = cli("elmnet.demo", "--model", "num_memory_999", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: 'num_memory_999' is neither a folder")


def test_synthetic_input_is_signed_and_seeded():
    x = synthetic_neuronio_input(400, seed=3)
    assert x.shape == (400, 1278)
    assert set(x[:, :639].ravel()) <= {0.0, 1.0} and set(x[:, 639:].ravel()) <= {0.0, -1.0}
    assert (x != 0).any()
    assert (synthetic_neuronio_input(400, seed=3) == x).all()


def test_speed_benchmark_runs_and_both_methods_agree():
    # main() asserts that the parallel and per-step forwards agree before timing.
    rows = elm_neuron_speed.main(["--batch", "2", "--steps", "30", "--repeats", "1"])
    from elmnet import cpp_loop

    # The compiled loops get their own row where they build (they do on CI: .ci/run
    # installs a compiler); main() checks them against eager first as well.
    built = cpp_loop.extension() is not None
    cpp = ["cpp rec. only", "cpp loops"] if built else []
    int8 = ["cpp, int8 input"] if built else []
    assert [r["method"] for r in rows] == ["parallel traces", "per-step loop", *cpp, "auto", *int8]
    assert all(r["forward"] > 0 and r["forward+backward"] > 0 for r in rows)
