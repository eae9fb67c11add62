"""Camera-conditioned UNets and condition encoders, checked against diffusers' base models."""

import copy
import math

import pytest
import torch
from diffusers import AutoencoderKL, I2VGenXLUNet, UNet3DConditionModel
from diffusers.models.resnet import ResnetBlock2D
from omegaconf import OmegaConf

from videomv.geometry import camera_vector, orbit_cameras
from videomv.models import CameraEmbedding, I2MVUNet, T2MVUNet
from videomv.models.conditioning import (
    CLIP_VOCAB_SIZE,
    ImageConditioner,
    ImageConditioning,
    TextConditioner,
    bundled_clip_tokenizer,
)
from videomv.models.denoise import MultiViewCondition, denoise
from videomv.train.mv import build_unet

from tiny_videomv import TINY_UNET as TINY

B, F, H = 2, 3, 8


def _pair(base_cls, ours_cls, seed=0):
    torch.manual_seed(seed)
    base = base_cls(**TINY).eval()
    ours = ours_cls(**TINY).eval()
    result = ours.load_state_dict(base.state_dict(), strict=False)
    assert all(k.startswith("camera_embedding.") for k in result.missing_keys) and not result.unexpected_keys
    return base, ours


@pytest.fixture(scope="module")
def t2mv():
    return _pair(UNet3DConditionModel, T2MVUNet)


@pytest.fixture(scope="module")
def i2mv():
    return _pair(I2VGenXLUNet, I2MVUNet)


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(
        sample=torch.randn(B, 4, F, H, H, generator=g),
        text=torch.randn(B, 5, 16, generator=g),
        image_latents=torch.randn(B, 4, F, H, H, generator=g),
        image_embeddings=torch.randn(B, 1, 16, generator=g),
        cameras=torch.randn(B, F, 16, generator=g),
    )


def _run(model, x, cameras=None, **kw):
    with torch.no_grad():
        if isinstance(model, I2VGenXLUNet):  # also I2MVUNet
            extra = {} if type(model) is I2VGenXLUNet else dict(cameras=cameras, **kw)
            return model(x["sample"], 7, torch.tensor([8] * B), x["image_latents"], x["image_embeddings"],
                         x["text"], **extra).sample
        extra = {} if type(model) is UNet3DConditionModel else dict(cameras=cameras, **kw)
        return model(x["sample"], 7, x["text"], **extra).sample


def _nonzero_camera_branch(model, seed=2):
    torch.manual_seed(seed)
    torch.nn.init.normal_(model.camera_embedding.linear_2.weight, std=0.5)
    torch.nn.init.normal_(model.camera_embedding.linear_2.bias, std=0.5)


def _camera_prehooks(base, cam_emb):
    """Independent reference: add a per-frame embedding (B*F, D) to the temb of every resnet."""
    def hook(module, args):
        return (args[0], args[1] + cam_emb)
    return [m.register_forward_pre_hook(hook) for m in base.modules() if isinstance(m, ResnetBlock2D)]


def test_camera_embedding_width_and_zero_init():
    emb = CameraEmbedding(16, 64)
    assert emb.linear_1.in_features == 16 and emb.linear_2.out_features == 64
    assert torch.count_nonzero(emb.linear_2.weight) == 0 and torch.count_nonzero(emb.linear_2.bias) == 0
    assert torch.count_nonzero(emb(torch.randn(5, 16))) == 0
    model = T2MVUNet(**TINY)
    assert model.camera_embedding.linear_1.out_features == 4 * TINY["block_out_channels"][0]
    with pytest.raises(ValueError, match="camera_embed_dim"):
        T2MVUNet(**TINY, camera_embed_dim=100)


@pytest.mark.parametrize("which", ["t2mv", "i2mv"])
def test_zero_camera_branch_equals_base_exactly(which, request):
    base, ours = request.getfixturevalue(which)
    x = _inputs()
    expected = _run(base, x)
    assert torch.equal(_run(ours, x), expected)
    assert torch.equal(_run(ours, x, cameras=x["cameras"]), expected)
    assert torch.equal(_run(ours, x, cameras=orbit_cameras(F).expand(B, F, 4, 4)), expected)


@pytest.mark.parametrize("base_cls,ours_cls", [(UNet3DConditionModel, T2MVUNet), (I2VGenXLUNet, I2MVUNet)])
def test_camera_added_per_frame_to_time_embedding(base_cls, ours_cls):
    base, ours = _pair(base_cls, ours_cls, seed=3)
    _nonzero_camera_branch(ours)
    x = _inputs()
    got = _run(ours, x, cameras=x["cameras"])
    with torch.no_grad():
        cam_emb = ours.camera_embedding(x["cameras"]).reshape(B * F, -1)
    handles = _camera_prehooks(base, cam_emb)
    try:
        expected = _run(base, x)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, _run(base, x), atol=1e-3)


@pytest.mark.parametrize("which", ["t2mv", "i2mv"])
def test_camera_sensitivity_and_mask(which, request):
    base, template = request.getfixturevalue(which)
    ours = type(template)(**TINY).eval()
    ours.load_state_dict(template.state_dict())
    _nonzero_camera_branch(ours)
    x = _inputs()
    cams = x["cameras"]
    out = _run(ours, x, cameras=cams)
    assert torch.equal(out, _run(ours, x, cameras=cams.clone()))
    assert (out - _run(ours, x, cameras=cams + 0.5)).abs().max() > 1e-3
    # the frame dimension matters: reordering cameras over frames changes the result
    assert (out - _run(ours, x, cameras=cams.flip(1))).abs().max() > 1e-3
    # (B, F, 4, 4) matrices are flattened row-major like videomv.geometry.camera_vector
    c2w = orbit_cameras(F, elevation=20.0).expand(B, F, 4, 4)
    assert torch.equal(_run(ours, x, cameras=c2w), _run(ours, x, cameras=camera_vector(c2w)))
    # camera_mask drops the camera of sample 0 only
    masked = _run(ours, x, cameras=cams, camera_mask=torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(masked[0], _run(base, x)[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(masked[1], out[1], rtol=0, atol=1e-6)


def test_bad_camera_inputs(t2mv):
    _, ours = t2mv
    x = _inputs()
    with pytest.raises(ValueError, match="cameras per sample"):
        _run(ours, x, cameras=torch.randn(B, F + 1, 16))
    with pytest.raises(ValueError, match="expected shape"):
        _run(ours, x, cameras=torch.randn(B, F, 12))
    with pytest.raises(ValueError, match="batch size"):
        _run(ours, x, cameras=torch.randn(B + 1, F, 16))
    with pytest.raises(ValueError, match="camera_mask"):
        _run(ours, x, cameras=x["cameras"], camera_mask=torch.ones(B + 1))
    with pytest.raises(ValueError, match="camera_mask"):
        _run(ours, x, camera_mask=torch.ones(B))


@pytest.mark.parametrize("which", ["t2mv", "i2mv"])
def test_save_load_round_trip(which, request, tmp_path):
    _, template = request.getfixturevalue(which)
    ours = type(template)(**TINY).eval()
    ours.load_state_dict(template.state_dict())
    _nonzero_camera_branch(ours)
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = type(ours).from_pretrained(tmp_path).eval()
    assert loaded.config.camera_dim == 16
    for k, v in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = _inputs()
    assert torch.equal(_run(loaded, x, cameras=x["cameras"]), _run(ours, x, cameras=x["cameras"]))


@pytest.mark.parametrize("which", ["t2mv", "i2mv"])
def test_from_base_diffusers_folder(which, request, tmp_path):
    base, ours = request.getfixturevalue(which)
    base.save_pretrained(tmp_path / "unet")
    loaded = type(ours).from_base(tmp_path, subfolder="unet").eval()
    assert torch.count_nonzero(loaded.camera_embedding.linear_2.weight) == 0
    x = _inputs()
    assert torch.equal(_run(loaded, x, cameras=x["cameras"]), _run(base, x))
    # a checkpoint that already has a camera branch is not a base model
    loaded.save_pretrained(tmp_path / "mv")
    with pytest.raises(ValueError, match="already has a camera branch"):
        type(ours).from_base(tmp_path, subfolder="mv")


@pytest.mark.parametrize("which", ["t2mv", "i2mv"])
def test_gradient_checkpointing_same_outputs_and_grads(which, request):
    _, template = request.getfixturevalue(which)
    ours = type(template)(**TINY).eval()
    ours.load_state_dict(template.state_dict())
    _nonzero_camera_branch(ours)
    x = _inputs()

    def forward_backward():
        ours.zero_grad()
        if isinstance(ours, I2MVUNet):
            out = ours(x["sample"], 7, torch.tensor([8] * B), x["image_latents"], x["image_embeddings"], x["text"],
                       cameras=x["cameras"]).sample
        else:
            out = ours(x["sample"], 7, x["text"], cameras=x["cameras"]).sample
        out.square().mean().backward()
        return out.detach(), ours.camera_embedding.linear_1.weight.grad.clone()

    out_plain, grad_plain = forward_backward()
    ours.enable_gradient_checkpointing()
    assert ours.gradient_checkpointing
    out_ckpt, grad_ckpt = forward_backward()
    ours.disable_gradient_checkpointing()
    torch.testing.assert_close(out_ckpt, out_plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_ckpt, grad_plain, rtol=1e-5, atol=1e-7)
    assert grad_plain.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- #
# condition encoders


def test_bundled_tokenizer_matches_open_clip():
    import open_clip

    tokenizer = bundled_clip_tokenizer()
    assert len(tokenizer) == CLIP_VOCAB_SIZE and tokenizer.model_max_length == 77
    prompts = ["a red chair, 3d asset", "A  Photo of an ASTRONAUT riding a horse.", "",
               "naïve café déjà-vu 123 4567 \"quoted\" it's", "word " * 100]
    ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ids, open_clip.tokenize(prompts))
    assert ids[2, 0] == 49406 and ids[2, 1] == 49407 and ids[2, 2] == 0  # start, end, padding "!" = 0
    assert ids[4, -1] == 49407  # truncated prompts still end with the end token


def test_text_conditioner_tiny_and_from_pretrained(tmp_path):
    conditioner = TextConditioner.tiny(hidden_size=32)
    emb = conditioner.encode(["a chair", "a table"])
    assert emb.shape == (2, 77, 32)
    assert not torch.allclose(emb[0], emb[1])
    with pytest.raises(TypeError, match="prompts"):
        conditioner.encode("a chair")
    # a diffusers folder without tokenizer/ falls back to the bundled tokenizer
    conditioner.text_encoder.save_pretrained(tmp_path / "text_encoder")
    loaded = TextConditioner.from_pretrained(str(tmp_path))
    assert torch.equal(loaded.encode(["a chair", "a table"]), emb)
    conditioner.tokenizer.save_pretrained(tmp_path / "tokenizer")
    assert torch.equal(TextConditioner.from_pretrained(str(tmp_path)).tokenize(["a chair"]),
                       conditioner.tokenize(["a chair"]))


@pytest.mark.parametrize("clip_skip", [None, 1])
def test_zero_padding_zeroes_what_follows_the_end_token_and_saves(tmp_path, clip_skip):
    from videomv.models.conditioning import padding_mask

    conditioner = TextConditioner.tiny(hidden_size=32)
    prompts = ["a red cube on top of a blue cylinder", "a green torus"]
    plain = conditioner.encode(prompts, clip_skip)
    conditioner.zero_padding = True
    zeroed = conditioner.encode(prompts, clip_skip)
    ids = conditioner.tokenize(prompts)
    end = [row.index(conditioner.tokenizer.eos_token_id, 1) for row in ids.tolist()]
    for b, e in enumerate(end):
        assert torch.equal(zeroed[b, : e + 1], plain[b, : e + 1])  # start, words and end token as before
        assert not zeroed[b, e + 1 :].any() and plain[b, e + 1 :].abs().sum() > 0
    assert padding_mask(ids, conditioner.tokenizer.eos_token_id).sum(1).tolist() == [77 - e - 1 for e in end]
    conditioner.text_encoder.save_pretrained(tmp_path / "text_encoder")
    loaded = TextConditioner.from_pretrained(str(tmp_path))
    assert loaded.zero_padding and torch.equal(loaded.encode(prompts, clip_skip), zeroed)
    with pytest.raises(ValueError, match="zero_padding"):
        conditioner.zero_padding = 1
    with pytest.raises(ValueError, match="end token"):
        padding_mask(torch.tensor([[49406, 320, 0]]), 49407)


def test_identity_layers_keep_the_output_then_train(tmp_path):
    conditioner = TextConditioner.tiny(hidden_size=32)
    prompts = ["a red cube on top of a blue cylinder", "a green torus"]
    before = conditioner.encode(prompts)
    conditioner.add_identity_layers(2)
    assert conditioner.text_encoder.config.num_hidden_layers == 4
    assert torch.equal(conditioner.encode(prompts), before)  # zero residual branches: bit for bit
    # the new layers get gradients and, after one step, change the output
    new = list(conditioner.transformer.encoder.layers[2:].parameters())
    conditioner.encode(prompts).square().sum().backward()
    assert all(p.grad is not None for p in new) and any(p.grad.abs().sum() > 0 for p in new)
    with torch.no_grad():
        for p in new:
            p -= 0.1 * p.grad
    after = conditioner.encode(prompts)
    assert not torch.allclose(after, before)
    # the grown encoder saves and loads with its four layers
    conditioner.text_encoder.save_pretrained(tmp_path / "text_encoder")
    loaded = TextConditioner.from_pretrained(str(tmp_path))
    assert loaded.text_encoder.config.num_hidden_layers == 4
    assert torch.equal(loaded.encode(prompts), after)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="extra layers"):
            conditioner.add_identity_layers(bad)


def _clip_by_hand(text_encoder, ids, both_ways: int):
    """CLIP's text transformer written out: pre-norm layers, causal attention except in the last
    `both_ways` layers, then the final layer norm."""
    body = getattr(text_encoder, "text_model", text_encoder)
    x = body.embeddings(input_ids=ids)
    layers = body.encoder.layers
    length = ids.shape[1]
    future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    for index, layer in enumerate(layers):
        attn = layer.self_attn
        h = layer.layer_norm1(x)
        split = lambda t: t.view(*t.shape[:2], attn.num_heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
        scores = q @ k.transpose(-1, -2) * attn.head_dim ** -0.5
        if index < len(layers) - both_ways:
            scores = scores.masked_fill(future, float("-inf"))
        mixed = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
        x = x + attn.out_proj(mixed)
        x = x + layer.mlp(layer.layer_norm2(x))
    return body.final_layer_norm(x)


@pytest.mark.parametrize("both_ways", [1, 2])
def test_bidirectional_text_layers_against_clip_by_hand(tmp_path, both_ways):
    conditioner = TextConditioner.tiny(hidden_size=32)
    prompts = ["a red cube on top of a blue cylinder", "a red cube on top of a green cylinder"]
    ids = conditioner.tokenize(prompts)
    with torch.no_grad():
        causal = conditioner.encode(prompts)
        torch.testing.assert_close(causal, _clip_by_hand(conditioner.text_encoder, ids, 0))
        conditioner.attend_both_ways(both_ways)
        both = conditioner.encode(prompts)
        torch.testing.assert_close(both, _clip_by_hand(conditioner.text_encoder, ids, both_ways))
    # "cube" (token 3) sees the second part's colour only through the bidirectional layers
    assert torch.equal(causal[0, :4], causal[1, :4])
    assert (both[0, 3] - both[1, 3]).abs().max() > 1e-3
    config = conditioner.text_encoder.config
    assert config.bidirectional_layers == both_ways and config.architectures == ["BidirectionalCLIPTextModel"]
    # saved and loaded: the config brings the bidirectional layers back
    conditioner.text_encoder.save_pretrained(tmp_path / "text_encoder")
    loaded = TextConditioner.from_pretrained(str(tmp_path))
    assert type(loaded.text_encoder).__name__ == "BidirectionalCLIPTextModel"
    assert torch.equal(loaded.encode(prompts), both)


def test_bidirectional_text_layers_refuse_bad_counts():
    conditioner = TextConditioner.tiny(hidden_size=32)  # two layers
    for bad in (0, 3, -1, True, 1.0):
        with pytest.raises(ValueError, match="bidirectional_layers"):
            TextConditioner.tiny(hidden_size=32).attend_both_ways(bad)
    conditioner.attend_both_ways(1)
    with pytest.raises(ValueError, match="already has bidirectional layers"):
        conditioner.attend_both_ways(1)
    with pytest.raises(ValueError, match="append them before"):
        conditioner.add_identity_layers(1)


def _tiny_vae():
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                         sample_size=16, scaling_factor=0.18215).eval()


def test_image_conditioner_layout():
    vae = _tiny_vae()
    conditioner = ImageConditioner(ImageConditioner.tiny_image_encoder(image_size=32), vae, image_size=32)
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        cond = conditioner.encode(images, num_frames=5)
        expected_first = vae.encode(images * 2 - 1).latent_dist.mode() * 0.18215
    assert cond.image_embeddings.shape == (2, 1, 32)
    assert cond.image_latents.shape == (2, 4, 5, 8, 8)
    torch.testing.assert_close(cond.image_latents[:, :, 0], expected_first)
    for k in range(1, 5):  # position-mask frames k / (F - 1)
        assert torch.all(cond.image_latents[:, :, k] == k / 4)
    with pytest.raises(ValueError, match="images"):
        conditioner.encode(images * 3, num_frames=5)
    with pytest.raises(ValueError, match="images"):
        conditioner.encode(images[:, :2], num_frames=5)


# -- the conditioning layer ------------------------------------------------------------------------


def _mask():
    return torch.tensor([1.0, 0.0])


def test_denoise_text_condition_is_the_hand_written_unet_call(t2mv):
    ours = copy.deepcopy(t2mv[1])
    _nonzero_camera_branch(ours)
    x = _inputs(seed=4)
    t = torch.tensor([7, 500])
    with torch.no_grad():
        expected = ours(x["sample"], t, encoder_hidden_states=x["text"], cameras=x["cameras"],
                        camera_mask=_mask()).sample
        got = denoise(ours, x["sample"], t, MultiViewCondition(x["text"], x["cameras"], _mask()))
    assert torch.equal(got, expected)


def test_denoise_image_condition_is_the_hand_written_unet_call(i2mv):
    _, ours = i2mv
    x = _inputs(seed=5)
    fps = torch.tensor([8, 16])
    with torch.no_grad():
        expected = ours(x["sample"], 7, fps=fps, image_latents=x["image_latents"],
                        image_embeddings=x["image_embeddings"], encoder_hidden_states=x["text"],
                        cameras=x["cameras"]).sample
        condition = MultiViewCondition(x["text"], x["cameras"], fps=fps,
                                       image=ImageConditioning(x["image_embeddings"], x["image_latents"]))
        got = denoise(ours, x["sample"], 7, condition)
    assert torch.equal(got, expected)


def test_guidance_pair_stacks_unconditional_then_conditional():
    x = _inputs(seed=6)
    negative = torch.randn_like(x["text"])
    image = ImageConditioning(x["image_embeddings"], x["image_latents"])
    pair = MultiViewCondition(x["text"], x["cameras"], image=image, fps=16).with_unconditional(negative)
    assert torch.equal(pair.text, torch.cat([negative, x["text"]]))
    assert torch.equal(pair.cameras, torch.cat([x["cameras"], x["cameras"]]))
    # as I2VGenXLPipeline: a zero CLIP embedding, the same image latents and fps
    assert torch.equal(pair.image.image_embeddings, torch.cat([torch.zeros_like(x["image_embeddings"]),
                                                               x["image_embeddings"]]))
    assert torch.equal(pair.image.image_latents, torch.cat([x["image_latents"], x["image_latents"]]))
    assert pair.fps == 16 and pair.camera_mask is None
    mixed = MultiViewCondition.cat([MultiViewCondition(x["text"], image=image, fps=8),
                                    MultiViewCondition(x["text"], image=image, fps=torch.tensor([16, 24]))])
    assert mixed.fps.tolist() == [8, 8, 16, 24] and mixed.cameras is None


def test_dropped_image_condition_zeroes_what_it_names_for_the_flagged_samples_only():
    x = _inputs(seed=7)
    image = ImageConditioning(x["image_embeddings"], x["image_latents"])
    drop = torch.tensor([True, False])
    embedding = image.dropped(drop)  # the release's unconditional branch: the CLIP embedding only
    assert torch.equal(embedding.image_embeddings[0], torch.zeros_like(x["image_embeddings"][0]))
    assert torch.equal(embedding.image_embeddings[1], x["image_embeddings"][1])
    assert torch.equal(embedding.image_latents, x["image_latents"])
    whole = image.dropped(drop, "image")  # also the image latent; the position-mask frames stay
    assert torch.equal(whole.image_embeddings, embedding.image_embeddings)
    assert torch.equal(whole.image_latents[0, :, 0], torch.zeros_like(x["image_latents"][0, :, 0]))
    assert torch.equal(whole.image_latents[0, :, 1:], x["image_latents"][0, :, 1:])
    assert torch.equal(whole.image_latents[1], x["image_latents"][1])
    assert x["image_latents"][0, :, 0].abs().sum() > 0  # the check can fail
    negative = torch.randn_like(x["text"])
    pair = MultiViewCondition(x["text"], x["cameras"], image=image, fps=16).with_unconditional(negative, "image")
    assert torch.equal(pair.image.image_latents[:2, :, 0], torch.zeros_like(x["image_latents"][:, :, 0]))
    assert torch.equal(pair.image.image_latents[2:], x["image_latents"])
    with pytest.raises(ValueError, match="unconditional image: expected one of"):
        image.dropped(drop, "latents")
    with pytest.raises(ValueError, match=r"drop: expected \(2,\) flags"):
        image.dropped(torch.tensor([True]))


def test_conditioning_layer_rejects_mismatched_inputs(t2mv, i2mv):
    x = _inputs()
    image = ImageConditioning(x["image_embeddings"], x["image_latents"])
    with pytest.raises(ValueError, match="image and fps"):
        MultiViewCondition(x["text"], image=image)
    with pytest.raises(ValueError, match="text"):
        MultiViewCondition(x["text"][0])
    with pytest.raises(ValueError, match="cameras is given for some"):
        MultiViewCondition.cat([MultiViewCondition(x["text"], x["cameras"]), MultiViewCondition(x["text"])])
    with pytest.raises(ValueError, match="batch size 1"):
        denoise(t2mv[1], x["sample"], 7, MultiViewCondition(x["text"][:1]))
    with pytest.raises(ValueError, match="T2MVUNet needs a text condition"):
        denoise(t2mv[1], x["sample"], 7, MultiViewCondition(x["text"], image=image, fps=8))
    with pytest.raises(ValueError, match="I2MVUNet needs an image condition"):
        denoise(i2mv[1], x["sample"], 7, MultiViewCondition(x["text"]))


def test_clean_input_view_puts_the_image_latent_in_place_of_view_0_for_the_unet(i2mv):
    _, unet = i2mv
    x = _inputs(seed=8)
    seen = []
    hook = unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        for clean in (False, True):
            image = ImageConditioning(x["image_embeddings"], x["image_latents"], clean_input_view=clean)
            with torch.no_grad():
                denoise(unet, x["sample"], 7, MultiViewCondition(x["text"], x["cameras"], image=image, fps=8))
    finally:
        hook.remove()
    noisy, clean = seen
    assert torch.equal(noisy, x["sample"])  # the release's way: the noisy latents as given
    assert torch.equal(clean[:, :, 0], x["image_latents"][:, :, 0])
    assert torch.equal(clean[:, :, 1:], x["sample"][:, :, 1:])
    dropped = ImageConditioning(x["image_embeddings"], x["image_latents"], True).dropped(torch.tensor([True, False]),
                                                                                         "image")
    assert dropped.clean_input_view and torch.equal(dropped.input_view_latent[0],
                                                    torch.zeros_like(x["image_latents"][0, :, :1]))
    pair = MultiViewCondition(x["text"], image=dropped, fps=8).with_unconditional(x["text"])
    assert pair.image.clean_input_view
    with pytest.raises(ValueError, match="clean_input_view differs"):
        MultiViewCondition.cat([MultiViewCondition(x["text"], image=dropped, fps=8),
                                MultiViewCondition(x["text"], image=ImageConditioning(x["image_embeddings"],
                                                                                      x["image_latents"]), fps=8)])


# ----------------------------------------------------------------------------- ray-map input
# `add_ray_map`: zero at the start, added after conv_in, per-frame rays of the right cameras, saved
# and loaded with the model.
RAY_FOVY = 49.1


def _orbit_inputs():
    """`_inputs()` with real camera-to-world matrices, which the ray map needs."""
    cameras = torch.stack([orbit_cameras(F, elevation=10.0), orbit_cameras(F, elevation=30.0, radius=1.5)])
    return dict(_inputs(), cameras=cameras)


def _model(cls, seed=0):
    torch.manual_seed(seed)
    return cls(**TINY).eval()


def _randomise_ray_map(model, seed=3):
    torch.manual_seed(seed)
    torch.nn.init.normal_(model.ray_map_in.weight, std=0.3)
    torch.nn.init.normal_(model.ray_map_in.bias, std=0.3)


def _hand_plucker(c2w: torch.Tensor, height: int, width: int, fovy_deg: float) -> torch.Tensor:
    """(6, H, W) Plücker coordinates (o x d, d) pixel by pixel, OpenGL camera, rows downwards."""
    focal = height / 2 / math.tan(math.radians(fovy_deg) / 2)
    out = torch.zeros(6, height, width)
    origin = c2w[:3, 3]
    for i in range(height):
        for j in range(width):
            d_cam = torch.tensor([(j + 0.5 - width / 2) / focal, -(i + 0.5 - height / 2) / focal, -1.0])
            d = c2w[:3, :3] @ d_cam
            d = d / d.norm()
            out[:3, i, j] = torch.linalg.cross(origin, d)
            out[3:, i, j] = d
    return out


@pytest.mark.parametrize("cls", [T2MVUNet, I2MVUNet])
def test_added_ray_map_starts_at_zero_and_saves_its_field_of_view(cls, tmp_path):
    model = _model(cls)
    x = _orbit_inputs()
    before = _run(model, x, cameras=x["cameras"])
    model.add_ray_map(RAY_FOVY)
    assert model.config.ray_map_fovy == RAY_FOVY
    assert model.ray_map_in.out_channels == TINY["block_out_channels"][0] and model.ray_map_in.in_channels == 6
    assert torch.equal(_run(model, x, cameras=x["cameras"]), before)
    _randomise_ray_map(model)
    after = _run(model, x, cameras=x["cameras"])
    assert (after - before).abs().max() > 1e-2
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    assert loaded.config.ray_map_fovy == RAY_FOVY
    assert torch.equal(loaded.ray_map_in.weight, model.ray_map_in.weight)
    assert torch.equal(_run(loaded, x, cameras=x["cameras"]), after)


def test_ray_map_is_a_conv_of_each_frames_plucker_rays_added_after_conv_in():
    """Reference: the same UNet without a ray map, its conv_in output shifted by a hand-built conv of
    hand-computed rays (each frame's own camera, latent-pixel centres)."""
    model = _model(T2MVUNet)
    model.add_ray_map(RAY_FOVY)
    _randomise_ray_map(model)
    x = _orbit_inputs()
    got = _run(model, x, cameras=x["cameras"])

    reference = _model(T2MVUNet)
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("ray_map_in.")})
    rays = torch.stack([_hand_plucker(c2w, H, H, RAY_FOVY) for c2w in x["cameras"].reshape(B * F, 4, 4)])
    shift = torch.nn.functional.conv2d(rays, model.ray_map_in.weight, model.ray_map_in.bias, padding=1)
    handle = reference.conv_in.register_forward_hook(lambda module, args, out: out + shift)
    try:
        expected = _run(reference, x, cameras=x["cameras"])
    finally:
        handle.remove()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_ray_map_rows_look_up_at_the_top_and_rays_follow_the_camera():
    model = _model(T2MVUNet)
    model.add_ray_map(90.0)
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.0, 0.0, 2.0])
    rays = model.ray_map(c2w[None, None].expand(1, 1, 4, 4), None, 1, 1, 2, 2)[0]
    # fovy 90 over 2 rows: focal 1, pixel (0, 0) looks along (-0.5, 0.5, -1) / |.|
    d = torch.tensor([-0.5, 0.5, -1.0]) / math.sqrt(1.5)
    torch.testing.assert_close(rays[3:, 0, 0], d)
    torch.testing.assert_close(rays[:3, 0, 0], torch.tensor([-2 * d[1], 2 * d[0], 0.0]))
    assert (rays[4, 0] > 0).all() and (rays[4, 1] < 0).all()  # top row looks up, bottom row down


def test_camera_mask_and_no_cameras_drop_the_ray_map():
    model = _model(T2MVUNet)
    plain = _run(model, _orbit_inputs())
    model.add_ray_map(RAY_FOVY)
    _randomise_ray_map(model)
    x = _orbit_inputs()
    # no cameras: neither the camera embedding nor the ray map (2D images trained as 1-frame clips)
    assert torch.equal(_run(model, x), plain)
    masked = _run(model, x, cameras=x["cameras"], camera_mask=torch.tensor([0.0, 1.0]))
    full = _run(model, x, cameras=x["cameras"])
    all_dropped = _run(model, x, cameras=torch.zeros_like(x["cameras"]) + torch.eye(4),
                                   camera_mask=torch.zeros(B))
    torch.testing.assert_close(masked[1], full[1], rtol=0, atol=1e-6)
    # a dropped camera leaves the conv's bias: the same as any camera masked out
    torch.testing.assert_close(masked[0], all_dropped[0], rtol=0, atol=1e-6)
    assert (masked[0] - full[0]).abs().max() > 1e-3


def test_bad_ray_map_settings():
    model = _model(T2MVUNet)
    for bad in (0, 180, -5.0, True, "49"):
        with pytest.raises(ValueError, match="ray_map_fovy"):
            model.add_ray_map(bad)
    model.add_ray_map(RAY_FOVY)
    with pytest.raises(ValueError, match="already has a ray map"):
        model.add_ray_map(30.0)
    with pytest.raises(ValueError, match="ray_map_fovy"):
        T2MVUNet(**TINY, ray_map_fovy=200.0)


def test_build_unet_adds_a_ray_map_to_a_loaded_unet(tmp_path):
    _model(T2MVUNet).save_pretrained(tmp_path / "unet")
    cfg = OmegaConf.create({"pretrained": str(tmp_path), "subfolder": "unet", "ray_map_fovy": RAY_FOVY})
    unet = build_unet(cfg, "t2mv")
    assert unet.config.ray_map_fovy == RAY_FOVY and torch.count_nonzero(unet.ray_map_in.weight) == 0
    unet.save_pretrained(tmp_path / "with_rays" / "unet")
    again = build_unet(OmegaConf.merge(cfg, {"pretrained": str(tmp_path / "with_rays")}), "t2mv")
    assert again.config.ray_map_fovy == RAY_FOVY  # the same field of view: kept, not added twice
    with pytest.raises(ValueError, match="already has a ray map"):
        build_unet(OmegaConf.merge(cfg, {"pretrained": str(tmp_path / "with_rays"), "ray_map_fovy": 30.0}), "t2mv")
    assert build_unet(OmegaConf.create({"init": dict(TINY)}), "t2mv").ray_map_in is None


# `sharpen_cross_attention`: the prompt's attention logits grow by gain², nothing else changes.

def _hand_logits(attn, x, context):
    """(B, heads, Q, K) attention logits of one diffusers `Attention`, written out: per head, the
    query and key projections' dot product over sqrt(head dim)."""
    heads = attn.heads
    q, k = attn.to_q(x), attn.to_k(context)
    q = q.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)
    k = k.view(context.shape[0], context.shape[1], heads, -1).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


@pytest.mark.parametrize("cls", [T2MVUNet, I2MVUNet])
def test_sharpen_cross_attention_scales_only_the_prompt_logits(cls):
    from diffusers.models.attention_processor import Attention

    model = _model(cls)
    before = copy.deepcopy(model)
    cross = [n for n, m in model.named_modules() if isinstance(m, Attention) and m.is_cross_attention]
    assert cross and not any(n.startswith("transformer_in") for n in cross)  # temporal attention is not the prompt's
    model.sharpen_cross_attention(2.0)
    old = before.state_dict()
    for key, value in model.state_dict().items():
        scaled = any(key.startswith(f"{n}.to_q.") or key.startswith(f"{n}.to_k.") for n in cross)
        torch.testing.assert_close(value, old[key] * (2.0 if scaled else 1.0), rtol=0, atol=0)

    attn, attn_before = model.get_submodule(cross[0]), before.get_submodule(cross[0])
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, attn.to_q.in_features, generator=g)
    context = torch.randn(2, 5, attn.to_k.in_features, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(_hand_logits(attn, x, context), 4.0 * _hand_logits(attn_before, x, context))
        # the hand-written logits are the ones the layer itself turns into attention weights
        probs = attn.get_attention_scores(attn.head_to_batch_dim(attn.to_q(x)), attn.head_to_batch_dim(attn.to_k(context)))
        torch.testing.assert_close(probs, _hand_logits(attn, x, context).softmax(-1).flatten(0, 1))
    for bad in (0, -1.0, True, "2"):
        with pytest.raises(ValueError, match="cross_attention_gain"):
            model.sharpen_cross_attention(bad)


def test_build_unet_applies_cross_attention_gain(tmp_path):
    from diffusers.models.attention_processor import Attention

    model = _model(T2MVUNet)
    model.save_pretrained(tmp_path / "unet")
    plain = build_unet(OmegaConf.create({"pretrained": str(tmp_path)}), "t2mv")
    sharp = build_unet(OmegaConf.create({"pretrained": str(tmp_path), "cross_attention_gain": 3.0}), "t2mv")
    layer = next(n for n, m in plain.named_modules() if isinstance(m, Attention) and m.is_cross_attention)
    torch.testing.assert_close(sharp.get_submodule(layer).to_k.weight, 3.0 * plain.get_submodule(layer).to_k.weight)
    assert sharp.config == plain.config  # the gain is in the weights, not the architecture
