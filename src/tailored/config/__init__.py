"""Typed configuration: one name per setting across YAML, CLI flags (``--lora-r``) and the Python API."""

from tailored.config.schema import TrainConfig
from tailored.config.load import dump_yaml, load_train_config

__all__ = ["TrainConfig", "load_train_config", "dump_yaml"]
