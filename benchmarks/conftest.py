"""pytest-benchmark integration: machine info that makes saved runs comparable."""
import os

import torch

from celora_bench import env, malloc


def pytest_benchmark_update_machine_info(config, machine_info):
    info = env.machine_info()
    machine_info["cpu_model"] = info["cpu"]
    machine_info["torch_threads"] = info["threads"]
    machine_info["torch"] = info["torch"]
    machine_info["blas"] = info["blas"]
    machine_info["malloc"] = info["malloc"]
    machine_info["gpu"] = info["gpu"]
    machine_info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")


def pytest_configure(config):
    malloc.tune()    # as the harness does, before anything is measured or fingerprinted
    torch.set_num_threads(int(os.environ.get("CELORA_THREADS", torch.get_num_threads())))
