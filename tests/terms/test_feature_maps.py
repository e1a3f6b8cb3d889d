"""Feature-map distillation (FitNets) and torchvision-style tuple datasets.

The loss against an independent computation (block means by reshaping, the 1x1 convolution as an einsum) and
numbers worked by hand; the term in training for a plain CNN and an HF ResNet through the same path; its
projections saved in checkpoints and restored on resume; and each refusal with its message.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_distill import DistillationTrainer, DistillationTrainingArguments, TupleCollator
from hf_distill.arguments import parse_feature_layers
from hf_distill.terms.feature_maps import FeatureMapMatcher, per_example_feature_loss
from hf_distill.trainer import FEATURE_MAP_MODULES_NAME
from tests.helpers.tiny_models import TinyCNN, TupleImages, tiny_resnet, tiny_vit

CNN_TO_RESNET = "features.3:resnet.encoder.stages.1"  # the student's last ReLU (6 ch, 8x8) -> 16 ch, 4x4


def make_args(tmp_path, **kw) -> DistillationTrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        feature_map_weight=1.0,
        feature_layers=CNN_TO_RESNET,
    )
    defaults.update(kw)
    return DistillationTrainingArguments(**defaults)


# ---- the loss -----------------------------------------------------------------------------------------------


def reference_loss(student, teacher, weight=None, bias=None):
    """Naive FitNets loss: block means to the teacher's size, the 1x1 convolution as a matrix product, the
    squared error averaged per example and summed over the batch."""
    b, c, h, w = student.shape
    th, tw = teacher.shape[2:]
    pooled = student.reshape(b, c, th, h // th, tw, w // tw).mean(dim=(3, 5))
    if weight is not None:
        pooled = torch.einsum("oc,bchw->bohw", weight[:, :, 0, 0], pooled) + bias[None, :, None, None]
    return ((pooled - teacher) ** 2).reshape(b, -1).mean(dim=1).sum()


def test_pooled_projected_mse_matches_an_independent_computation():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4, 8, 8), torch.randn(3, 6, 4, 4)
    matcher = FeatureMapMatcher([("s", "t")], [(4, 6)], [True])
    projection = matcher.projections["s"]
    assert isinstance(projection, nn.Conv2d) and projection.kernel_size == (1, 1)
    got = matcher([student], [teacher])
    want = reference_loss(student, teacher, projection.weight, projection.bias)
    torch.testing.assert_close(got, want)
    # The teacher is pooled too when its map is the larger one.
    got_swapped = FeatureMapMatcher([("s", "t")], [(6, 6)], [True])([teacher[:, :, :2, :2]], [teacher])
    torch.testing.assert_close(got_swapped, reference_loss(teacher, teacher[:, :, :2, :2]))


def test_feature_loss_by_hand():
    # Student 2x2 map [[1, 2], [3, 4]] pooled to 1x1 = 2.5; teacher 1: (2.5 - 1)^2 = 2.25.
    student = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert per_example_feature_loss(student, torch.ones(1, 1, 1, 1)).item() == pytest.approx(2.25)
    # Two channels, same size, no projection: ((1-0)^2 + (3-1)^2) / 2 = 2.5 per example.
    pair = per_example_feature_loss(torch.tensor([[[[1.0]], [[3.0]]]]), torch.tensor([[[[0.0]], [[1.0]]]]))
    assert pair.item() == pytest.approx(2.5)
    # Token maps (B, T, D): 4 tokens pooled to 2 -> means [2, 6] vs [2, 4]: (0 + 4) / 2 = 2.
    tokens = torch.tensor([[[1.0], [3.0], [5.0], [7.0]]])
    assert per_example_feature_loss(tokens, torch.tensor([[[2.0], [4.0]]])).item() == pytest.approx(2.0)
    same = torch.randn(2, 3, 5, 5)
    assert per_example_feature_loss(same, same.clone()).abs().max().item() == 0.0


def test_maps_of_different_kinds_are_refused():
    with pytest.raises(
        ValueError, match=r"cannot be matched: both must be \(batch, channels, height, width\)"
    ):
        per_example_feature_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 16, 3))


# ---- in training: a plain CNN and an HF ResNet through one path -----------------------------------------------


def losses_logged(trainer, name):
    return [entry[name] for entry in trainer.state.log_history if name in entry]


@pytest.mark.parametrize(
    "student_kind, layers",
    [("plain CNN", CNN_TO_RESNET), ("HF ResNet", "resnet.encoder.stages.0:resnet.encoder.stages.1")],
)
def test_feature_maps_train_a_student_from_a_resnet_teacher(tmp_path, student_kind, layers):
    student = TinyCNN() if student_kind == "plain CNN" else tiny_resnet(seed=1, widths=(4, 8))
    teacher = tiny_resnet()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path, feature_layers=layers, max_steps=4),
        train_dataset=TupleImages(),  # (image, label) tuples: batched by TupleCollator without being asked
    )
    assert isinstance(trainer.data_collator, TupleCollator)
    projection = trainer.feature_map_matcher.projections[layers.split(":")[0].replace(".", "__")]
    assert (projection.in_channels, projection.out_channels) == (6 if student_kind == "plain CNN" else 4, 16)
    start = projection.weight.detach().clone()
    trainer.train()
    logged = losses_logged(trainer, "loss_feature_map")
    assert len(logged) == 4 and all(v > 0 for v in logged)
    assert logged[-1] < logged[0], logged
    assert not torch.equal(projection.weight.detach(), start), "the projection did not train"
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f"teacher changed: {key}"


def test_vit_token_maps_through_the_same_path(tmp_path):
    # A ViT layer's output is (B, T, D) tokens: a linear projection 8 -> 16 wide, tokens matched one to one.
    trainer = DistillationTrainer(
        model=tiny_vit(hidden=8),
        teacher_model=tiny_vit(seed=1, hidden=16),
        args=make_args(tmp_path, feature_layers="vit.layers.1:vit.layers.1", max_steps=2),
        train_dataset=TupleImages(),
    )
    projection = trainer.feature_map_matcher.projections["vit__layers__1"]
    assert isinstance(projection, nn.Linear) and (projection.in_features, projection.out_features) == (8, 16)
    trainer.train()
    assert len(losses_logged(trainer, "loss_feature_map")) == 2


def test_the_term_is_its_weight_times_the_logged_part(tmp_path):
    # alpha=1 and a feature weight of 3: loss = kd + 3 * feature part, checked on the first logged step.
    trainer = DistillationTrainer(
        model=TinyCNN(),
        teacher_model=tiny_resnet(),
        args=make_args(tmp_path, alpha=1.0, feature_map_weight=3.0, max_steps=1, learning_rate=0.0),
        train_dataset=TupleImages(n=4),
    )
    trainer.train()
    (entry,) = [e for e in trainer.state.log_history if "loss_feature_map" in e]
    assert entry["loss"] == pytest.approx(entry["loss_kd"] + 3.0 * entry["loss_feature_map"], rel=1e-4)


def test_projections_are_saved_and_restored_on_resume(tmp_path):
    args = make_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    trainer = DistillationTrainer(
        model=TinyCNN(), teacher_model=tiny_resnet(), args=args, train_dataset=TupleImages()
    )
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    saved = torch.load(checkpoint / FEATURE_MAP_MODULES_NAME, weights_only=True)
    trained = trainer.feature_map_matcher.state_dict()
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)

    resumed = DistillationTrainer(
        model=TinyCNN(), teacher_model=tiny_resnet(), args=args, train_dataset=TupleImages()
    )
    fresh = {k: v.clone() for k, v in resumed.feature_map_matcher.state_dict().items()}
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved), (
        "a fresh projection equals the trained one"
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    restored = resumed.feature_map_matcher.state_dict()
    assert all(torch.equal(restored[k], saved[k]) for k in saved)

    (checkpoint / FEATURE_MAP_MODULES_NAME).unlink()
    again = DistillationTrainer(
        model=TinyCNN(), teacher_model=tiny_resnet(), args=args, train_dataset=TupleImages()
    )
    with pytest.raises(ValueError, match=f"{FEATURE_MAP_MODULES_NAME} is missing"):
        again.train(resume_from_checkpoint=str(checkpoint))


# ---- refusals ---------------------------------------------------------------------------------------------------


def test_unknown_layer_names_are_refused_with_the_available_ones(tmp_path):
    with pytest.raises(
        ValueError, match=r"names student layer 'features\.9'.*Its modules are: features, head"
    ):
        DistillationTrainer(
            model=TinyCNN(),
            teacher_model=tiny_resnet(),
            args=make_args(tmp_path, feature_layers="features.9:resnet.encoder.stages.1"),
            train_dataset=TupleImages(),
        )
    with pytest.raises(
        ValueError, match=r"names teacher layer 'encoder'.*Its modules are: resnet, classifier"
    ):
        DistillationTrainer(
            model=TinyCNN(),
            teacher_model=tiny_resnet(),
            args=make_args(tmp_path, feature_layers="features.3:encoder"),
            train_dataset=TupleImages(),
        )


def test_hidden_state_matching_on_a_resnet_points_to_feature_maps(tmp_path):
    # It used to crash with AttributeError: num_hidden_layers.
    with pytest.raises(
        ValueError, match="ResNetConfig without num_hidden_layers or hidden_size.*feature_map_weight"
    ):
        DistillationTrainer(
            model=tiny_resnet(seed=1),
            teacher_model=tiny_resnet(),
            args=make_args(tmp_path, feature_map_weight=0.0, hidden_state_weight=1.0),
            train_dataset=TupleImages(),
        )


def test_feature_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="feature_map_weight=1.0 but feature_layers is empty"):
        make_args(tmp_path, feature_layers="")
    with pytest.raises(ValueError, match="'features.3' is not of the form 'student_layer:teacher_layer'"):
        make_args(tmp_path, feature_layers="features.3")
    with pytest.raises(ValueError, match="names a student layer twice"):
        parse_feature_layers("a:b, a:c")
    with pytest.raises(ValueError, match="feature_map_weight must be >= 0"):
        make_args(tmp_path, feature_map_weight=-1.0)


# ---- tuple datasets -----------------------------------------------------------------------------------------------


def test_tuple_collator_batches_images_and_labels():
    batch = TupleCollator()([(torch.zeros(1, 4, 4), 3), (torch.ones(1, 4, 4).numpy(), torch.tensor(7))])
    assert batch["pixel_values"].shape == (2, 1, 4, 4) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == [3, 7] and batch["labels"].dtype == torch.long
    with pytest.raises(TypeError, match="Give the dataset a transform that returns a tensor"):
        TupleCollator()([("an image file", 1)])
    with pytest.raises(ValueError, match="different shapes"):
        TupleCollator()([(torch.zeros(1, 4, 4), 0), (torch.zeros(1, 5, 5), 1)])


def test_logit_kd_on_a_tuple_dataset(tmp_path):
    trainer = DistillationTrainer(
        model=TinyCNN(),
        teacher_model=TinyCNN(seed=1, widths=(8, 8)),
        args=make_args(tmp_path, feature_map_weight=0.0, feature_layers=""),
        train_dataset=TupleImages(),
        eval_dataset=TupleImages(n=8),
    )
    trainer.train()
    assert losses_logged(trainer, "loss_kd") and "eval_loss" in trainer.evaluate()


def test_a_forward_without_pixel_values_is_refused_naming_the_collator(tmp_path):
    class TorchvisionStyle(TinyCNN):
        def forward(self, x):
            return super().forward(x)

    with pytest.raises(ValueError, match=r"TupleCollator into \{'pixel_values'.*student's forward\(x\)"):
        DistillationTrainer(
            model=TorchvisionStyle(),
            teacher_model=TinyCNN(seed=1),
            args=make_args(tmp_path, feature_map_weight=0.0, feature_layers=""),
            train_dataset=TupleImages(),
        )


def test_gradient_accumulation_does_not_change_the_feature_term(tmp_path):
    # One image counts once whether the 8 images of a step come as 8 x 1 or as 4 x 2 micro-batches.
    weights = []
    for batch, accumulation in ((8, 1), (4, 2)):
        student = TinyCNN()
        trainer = DistillationTrainer(
            model=student,
            teacher_model=tiny_resnet(),
            args=make_args(
                tmp_path / f"b{batch}",
                per_device_train_batch_size=batch,
                gradient_accumulation_steps=accumulation,
                max_steps=2,
                feature_map_weight=5.0,
            ),
            train_dataset=TupleImages(),
        )
        trainer.train()
        weights.append(
            [p.detach().clone() for p in (*student.parameters(), *trainer.feature_map_matcher.parameters())]
        )
    for one, two in zip(*weights):
        torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-6)
