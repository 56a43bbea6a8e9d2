"""Registry, builder and config files: the errors a researcher meets first."""

import os
import re
import textwrap

import pytest
import yaml

from ppuhd import builder
from ppuhd.config import load_config, parse_value, save_config
from ppuhd.registry import LOSSES, MODELS, ConfigError, Registry

DEMO = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "demo", "vit_demo.yml")


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


# ---------------------------------------------------------------- registry
def test_registering_a_name_twice_is_an_error():
    registry = Registry("things", "thing")
    registry.register(dict, name="x")
    with pytest.raises(KeyError, match="already registered"):
        registry.register(list, name="x")


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown models type 'vit_base_patch16_244'.*Did you mean 'vit_base_patch16_224'"):
        MODELS.get("vit_base_patch16_244")


# ----------------------------------------------------------------- builder
def test_wrong_argument_names_the_component_the_key_and_the_accepted_ones():
    with pytest.raises(ConfigError) as err:
        builder.build({"type": "CrossEntropyLoss", "label_smothing": 0.1}, LOSSES, "loss")
    message = str(err.value)
    assert "loss: losses 'CrossEntropyLoss' has no argument 'label_smothing'" in message
    assert "Did you mean 'label_smoothing'" in message and "Accepted: label_smoothing" in message


def test_named_variants_check_arguments_against_the_model_signature():
    with pytest.raises(ConfigError, match="has no argument 'embed_dims'.*Did you mean 'embed_dim'"):
        builder.validate({"type": "vit_tiny_patch16_224", "embed_dims": 10}, MODELS, "model")


def test_a_constructors_own_error_is_reraised_with_its_cause():
    with pytest.raises(ConfigError, match="building losses 'CrossEntropyLoss' failed: ValueError") as err:
        builder.build({"type": "CrossEntropyLoss", "label_smoothing": 2.0}, LOSSES, "loss")
    assert isinstance(err.value.__cause__, ValueError)


def test_missing_required_argument():
    with pytest.raises(ConfigError, match="'ImageFolder' needs 'root'"):
        builder.validate({"type": "ImageFolder"}, None, "train_dataset")


def test_nested_components_are_built_from_the_kind_their_argument_names():
    model = builder.build(
        {
            "type": "ImageClassifier",
            "backbone": {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 24,
                         "depth": 1, "num_heads": 2, "num_classes": 0},
            "head": {"type": "LinearClsHead", "in_features": 24, "num_classes": 3},
        },
        MODELS,
    )
    assert type(model.backbone).__name__ == "VisionTransformer" and model.head.fc.weight.shape == [24, 3]
    with pytest.raises(ConfigError, match="unknown heads type 'VisionTransformer'"):
        builder.validate({"type": "ImageClassifier", "backbone": {"type": "VisionTransformer"},
                          "head": {"type": "VisionTransformer"}}, MODELS)


def test_a_component_can_declare_the_kind_of_an_argument():
    registry = Registry("things", "thing")
    registry.register(dict, name="Holder", argument_kinds={"inner": "models"})
    assert registry.argument_kinds("Holder") == {"inner": "models"}
    # DistillationLoss declares teacher -> models: VisionTransformer (also a backbone) is unambiguous there
    teacher = {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 24, "depth": 1,
               "num_heads": 2, "num_classes": 3}
    builder.validate({"type": "DistillationLoss", "base": {"type": "CrossEntropyLoss"}, "teacher": teacher}, LOSSES)
    with pytest.raises(ConfigError, match="'VisionTransformer' is registered as models, backbones"):
        builder.validate({"type": "DistillationLoss", "base": teacher}, LOSSES)


def test_transforms_inside_a_dataset_are_built():
    dataset_cfg = {"type": "ImageList", "root": ".", "list_file": "x.txt",
                   "transforms": [{"type": "CenterCrop", "size": 8}, {"type": "Normalise"}]}
    with pytest.raises(ConfigError, match=r"train_dataset.transforms.1: unknown transforms type 'Normalise'.*'Normalize'"):
        builder.validate(dataset_cfg, None, "train_dataset")


# ------------------------------------------------------------------ files
def test_base_inheritance_merges_dicts_replaces_lists_and_honours_replace(tmp_path):
    write(tmp_path, "base/a.yml", """
        model: {type: VisionTransformer, img_size: 32, patch_size: 8, depth: 2}
        metrics: [{type: TopKAccuracy, topk: [1, 5]}]
        runtime: {output_dir: out/a, device: cpu}
    """)
    write(tmp_path, "base/b.yml", """
        runtime: {output_dir: out/b}
    """)
    child = write(tmp_path, "child.yml", """
        _base_: [base/a.yml, base/b.yml]
        model: {depth: 4}
        metrics: [{type: TopKAccuracy, topk: [1]}]
    """)
    cfg = load_config(child)
    assert cfg["model"] == {"type": "VisionTransformer", "img_size": 32, "patch_size": 8, "depth": 4}
    assert cfg["metrics"] == [{"type": "TopKAccuracy", "topk": [1]}]
    assert cfg["runtime"] == {"output_dir": "out/b", "device": "cpu"}
    replacing = write(tmp_path, "replace.yml", """
        _base_: child.yml
        model: {_replace_: true, type: vit_tiny_patch16_224}
    """)
    assert load_config(replacing)["model"] == {"type": "vit_tiny_patch16_224"}


def test_base_cycle_and_missing_base_are_reported(tmp_path):
    write(tmp_path, "a.yml", "_base_: b.yml\n")
    write(tmp_path, "b.yml", "_base_: a.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yml"))
    write(tmp_path, "c.yml", "_base_: nowhere.yml\n")
    with pytest.raises(ConfigError, match="_base_ file 'nowhere.yml' not found"):
        load_config(str(tmp_path / "c.yml"))


def test_exponent_floats_are_numbers(tmp_path):
    path = write(tmp_path, "lr.yml", """
        model: {type: vit_tiny_patch16_224}
        lr_scheduler: {type: CosineWarmup, base_lr: 5e-4, min_lr: 1e-5}
    """)
    cfg = load_config(path)
    assert cfg["lr_scheduler"]["base_lr"] == 5e-4 and cfg["lr_scheduler"]["min_lr"] == 1e-5


def test_unknown_top_level_and_section_keys_say_what_was_meant(tmp_path):
    path = write(tmp_path, "typo.yml", """
        model: {type: vit_tiny_patch16_224}
        optimiser: {type: AdamW}
    """)
    with pytest.raises(ConfigError, match="unknown top-level config key 'optimiser'.*Did you mean 'optimizer'"):
        load_config(path)
    path = write(tmp_path, "typo2.yml", """
        model: {type: vit_tiny_patch16_224}
        train: {epochs: 3, acumulate_steps: 2}
    """)
    with pytest.raises(ConfigError, match="train: unknown key 'acumulate_steps'.*Did you mean 'accumulate_steps'"):
        load_config(path)


# -------------------------------------------------------------- overrides
def test_overrides_parse_literals_and_never_evaluate():
    assert parse_value("3") == 3 and parse_value("1e-4") == 1e-4 and parse_value("[0.9, 0.99]") == [0.9, 0.99]
    assert parse_value("true") is True and parse_value("null") is None and parse_value("bicubic") == "bicubic"
    assert parse_value("__import__('os').getcwd()") == "__import__('os').getcwd()"
    assert parse_value("yes") == "yes"  # a word stays a word (YAML 1.1 would read it as true)


def test_overrides_take_yaml_lists_and_mappings_as_a_config_file_writes_them():
    value = "[{type: RandomCrop, size: 96}, {type: ToCHW}]"
    assert parse_value(value) == [{"type": "RandomCrop", "size": 96}, {"type": "ToCHW"}]
    assert parse_value("{base_lr: 1e-4}") == {"base_lr": 1e-4}
    cfg = load_config(DEMO, [f"train_dataset.transforms={value}"])
    assert cfg["train_dataset"]["transforms"][0] == {"type": "RandomCrop", "size": 96}
    with pytest.raises(ConfigError, match=r"override 'train_dataset.transforms=\[\{type: RandomCrop'.*neither a Python"):
        load_config(DEMO, ["train_dataset.transforms=[{type: RandomCrop"])


def test_a_transform_written_as_a_bare_name_is_a_config_error():
    from ppuhd.data.transforms import Compose

    with pytest.raises(ConfigError, match="transforms.0 is 'RandomCrop', not a transform: write each as a mapping"):
        Compose(["RandomCrop"])


def test_overrides_change_values_including_list_items_and_new_accepted_keys():
    cfg = load_config(DEMO, ["train.epochs=2", "model.depth=1", "train_dataset.transforms.0.size=16",
                             "train.accumulate_steps=2", "optimizer.grad_clip_norm=1.0"])
    assert cfg["train"]["epochs"] == 2 and cfg["model"]["depth"] == 1
    assert cfg["train_dataset"]["transforms"][0]["size"] == 16
    assert cfg["train"]["accumulate_steps"] == 2 and cfg["optimizer"]["grad_clip_norm"] == 1.0


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epoch=3", "unknown key 'epoch'.*Did you mean 'epochs'"),
        ("model.embed_dims=64", "has no argument 'embed_dims'.*Did you mean 'embed_dim'"),
        ("runtme.device=cpu", "unknown top-level config key 'runtme'.*Did you mean 'runtime'"),
        # a top-level key that is a nested option's name points at that option, not at a look-alike section
        ("epochs=3", "unknown top-level config key 'epochs'. Did you mean 'train.epochs'\\?"),
        ("decay=0.9", "Did you mean 'train.ema.decay'\\?"),
        # or at a nested option of a name like it, not at a section that merely looks like it ('export')
        ("epoch=3", "unknown top-level config key 'epoch'. Did you mean 'train.epochs'\\?"),
        ("batchsize=8", "Did you mean 'dataloader.batch_size' or 'model.patch_size'\\?"),
        ("base_lr=0.1", "Did you mean 'lr_scheduler.base_lr'\\?"),  # a key of this config's own components
        ("train_dataset.transforms.9.size=3", "not an index of this list"),
        ("train.epochs", "must look like key.path=value"),
    ],
)
def test_overrides_refuse_keys_that_do_not_exist(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(DEMO, [override])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epochs='three'", "train.epochs must be an integer, got 'three' (str)"),
        ("dataloader.batch_size='8'", "dataloader.batch_size must be an integer, got '8' (str)"),
        ("train.seed=abc", "train.seed must be an integer, got 'abc' (str)"),
        ("train.seed=-1", "train.seed must be at least 0, got -1"),
        ("train.epochs=0", "train.epochs must be at least 1, got 0"),
        ("train.epochs=true", "train.epochs must be an integer, got True (bool)"),
        ("runtime.visualdl=1", "runtime.visualdl must be true or false, got 1 (int)"),
        ("dataloader.num_workers=-2", "dataloader.num_workers must be at least 0"),
        ("train.ema={'decay': 1.0}", "train.ema.decay must be below 1.0, got 1.0"),
        ("export.input_size=[224]", "export.input_size must have 2 values ([H, W]), got [224]"),
        ("train.pretrained_exclude='^head'", "train.pretrained_exclude must be a list, got '^head' (str)"),
        ("train.best_mode=maximum", "train.best_mode must be one of 'max', 'min', got 'maximum'. Did you mean 'max'"),
        ("train.amp.dtype=fp16", "train.amp.dtype must be one of 'float16', 'bfloat16'"),
    ],
)
def test_plain_sections_check_types_and_ranges(override, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(DEMO, [override])


def test_whole_numbers_are_accepted_where_a_float_is_expected():
    cfg = load_config(DEMO, ["train.ema={'decay': 0}", "train.amp.init_loss_scaling=1024"])
    assert cfg["train"]["ema"]["decay"] == 0


def test_saved_merged_config_reproduces_the_run(tmp_path):
    cfg = load_config(DEMO, ["train.epochs=2", "lr_scheduler.base_lr=3e-4"])
    path = str(tmp_path / "config.yml")
    save_config(cfg, path)
    with open(path) as f:
        assert "_base_" not in yaml.safe_load(f)
    assert load_config(path) == cfg


def test_every_shipped_config_is_valid():
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
    checked = 0
    for folder, _, files in os.walk(root):
        if os.path.basename(folder) == "_base_" or "_base_" in os.path.relpath(folder, root).split(os.sep):
            continue
        for name in files:
            if name.endswith(".yml") and not name.startswith("_"):
                cfg = load_config(os.path.join(folder, name))
                assert "model" in cfg
                checked += 1
    assert checked >= 26
