"""The published configuration files of the checkpoints the registry names, transcribed for tests/hub_fixture.py.

Sources (public; figures only, no code):
- Qwen-Image (2512) / Edit-2511 transformer, VAE and text encoder: the `transformer/config.json` of Qwen/Qwen-Image-Edit
  quoted in a public Qwen-Image architecture write-up, the field checks of a public Qwen-Image-Edit loader (MindStudio)
  that validates `model_index.json`, `transformer/config.json` (`zero_cond_t` true for Edit-2511), `vae/config.json`
  (latents_mean/std) and `text_encoder/config.json`; the full Qwen2.5-VL-7B `config.json` (transformers 4.53.1) as
  embedded in musubi-tuner's loader. diffusers' `AutoencoderKLQwenImage` defaults hold the same latents statistics.
- Scheduler: the `scheduler_config.json` the Qwen-Image repos ship (exponential dynamic shift 0.5..0.9, terminal 0.02),
  as quoted by public Qwen-Image-2.1 test fixtures too.
- Qwen-Image-2.1: `model_index.json` (QwenImage21Pipeline with processor/scheduler/text_encoder/transformer/vae and,
  for Turbo, `sample_sigmas`) as quoted by public 2.1 loaders' fixtures; transformer and VAE values are diffusers
  0.42's `QwenImage21Transformer2DModel` / `AutoencoderKLQwenImage21` defaults, taken from the published checkpoint;
  the Qwen3-VL-8B text encoder in the Qwen3-VL `config.json` format (public Qwen3-VL-4B config for the layout, the
  8B sizes from the brief, section 2); the Qwen3-VL `preprocessor_config.json` (size 65536..16777216 px, patch 16,
  mean/std 0.5).
- Qwen2-VL `preprocessor_config.json` (patch 14, CLIP mean/std, 3136..12845056 px) of the Qwen2.5-VL processors.

Only depths change here (layer and block counts); tests/hub_fixture.py also narrows the widths of every model except
Qwen-Image-2.1's text encoder, which keeps the real widths and vocabulary.
"""

from __future__ import annotations

import copy

DIFFUSERS_VERSION = "0.36.0.dev0"

SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": DIFFUSERS_VERSION,
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

# Turbo: a fixed 8-step grid in model_index.json (`sample_sigmas`), no dynamic shift (brief, section 2).
TURBO_SIGMAS = [1.0, 0.978453, 0.95418, 0.926626, 0.89508, 0.845148, 0.704534, 0.414568]
TURBO_SCHEDULER = {**SCHEDULER, "use_dynamic_shifting": False, "shift_terminal": None}

MODEL_INDEX_21 = {
    "_class_name": "QwenImage21Pipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "processor": ["transformers", "Qwen3VLProcessor"],
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "Qwen3VLForConditionalGeneration"],
    "transformer": ["diffusers", "QwenImage21Transformer2DModel"],
    "vae": ["diffusers", "AutoencoderKLQwenImage21"],
}
MODEL_INDEX_21_TURBO = {**MODEL_INDEX_21, "sample_sigmas": TURBO_SIGMAS}

MODEL_INDEX_20B = {
    "_class_name": "QwenImagePipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
    "tokenizer": ["transformers", "Qwen2Tokenizer"],
    "transformer": ["diffusers", "QwenImageTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKLQwenImage"],
}
MODEL_INDEX_EDIT_PLUS = {
    **MODEL_INDEX_20B,
    "_class_name": "QwenImageEditPlusPipeline",
    "processor": ["transformers", "Qwen2VLProcessor"],
}

TRANSFORMER_20B = {
    "_class_name": "QwenImageTransformer2DModel",
    "_diffusers_version": DIFFUSERS_VERSION,
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": False,
    "in_channels": 64,
    "joint_attention_dim": 3584,
    "num_attention_heads": 24,
    "num_layers": 60,
    "out_channels": 16,
    "patch_size": 2,
}
TRANSFORMER_EDIT_2511 = {**TRANSFORMER_20B, "zero_cond_t": True}

VAE_20B = {
    "_class_name": "AutoencoderKLQwenImage",
    "_diffusers_version": DIFFUSERS_VERSION,
    "attn_scales": [],
    "base_dim": 96,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ],  # fmt: skip
    "latents_std": [
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916,
    ],  # fmt: skip
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "z_dim": 16,
}

TRANSFORMER_21 = {
    "_class_name": "QwenImage21Transformer2DModel",
    "_diffusers_version": DIFFUSERS_VERSION,
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "causal_condition": True,
    "context_in_dim": 4096,
    "eps": 1e-06,
    "in_channels": 64,
    "mlp_ratio": 3,
    "num_attention_heads": 32,
    "num_layers": 32,
    "out_channels": 64,
    "patch_size": 1,
}

VAE_21 = {
    "_class_name": "AutoencoderKLQwenImage21",
    "_diffusers_version": DIFFUSERS_VERSION,
    "attn_scales": [],
    "base_dim": 96,
    "decoder_base_dim": 144,
    "dim_mult": [1, 2, 4, 8, 8],
    "dropout": 0.0,
    "in_channels": 4,
    "is_residual": True,
    "latents_mean": [
        0.5126, 0.7721, -0.0631, 1.3506, -0.7855, -2.1025, -0.3458, 1.3722, 1.8873, -1.7177, -0.651, 0.2732, 0.7562,
        -0.6163, -1.0277, 3.8363, 2.021, 0.0472, 0.932, 2.0087, 2.4954, -0.1391, -1.4249, 1.8464, -0.5236, 1.2826,
        3.7046, -1.3035, 2.7286, -1.4518, -1.9036, -1.9955, -0.0342, -1.0265, -0.7636, 3.0555, 0.0746, -3.0751,
        -0.1076, 1.7376, -1.0914, -1.9435, -0.2784, -1.368, 0.4809, -0.4433, 0.3764, 0.5729, -2.0595, 1.096, -1.326,
        -2.0211, -5.0179, 0.5275, 4.0162, 1.8505, 0.3026, 1.9373, 1.4937, 0.2632, 0.5547, -1.7121, -0.1562, 0.0304,
    ],  # fmt: skip
    "latents_std": [
        3.2001, 3.2936, 3.4321, 3.0091, 3.1061, 4.0379, 4.0705, 3.791, 3.0785, 3.65, 3.9308, 3.0904, 2.8778, 3.7675,
        3.732, 5.0756, 3.2864, 4.0397, 3.1317, 4.0443, 2.9249, 3.9454, 3.0988, 4.2489, 3.4896, 3.8513, 3.9323,
        3.4719, 3.7498, 4.283, 3.5694, 4.2467, 3.9037, 3.2947, 5.077, 3.5075, 3.27, 3.4767, 2.8063, 5.1125, 3.5327,
        4.7833, 3.1286, 4.1819, 3.8527, 3.8312, 3.5605, 4.3875, 3.9624, 4.0168, 3.5643, 4.055, 5.5614, 4.2963, 4.408,
        3.4959, 3.8747, 3.7608, 3.5735, 3.149, 3.7662, 3.6746, 3.4563, 3.8161,
    ],  # fmt: skip
    "num_res_blocks": 2,
    "out_channels": 4,
    "patch_size": None,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 8,
    "temperal_downsample": [False, True, True, True],
    "z_dim": 64,
}

# Qwen2.5-VL-7B (Qwen-Image's text encoder), as saved by transformers 4.53.1.
_QWEN25_TEXT = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "image_token_id": None,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "model_type": "qwen2_5_vl_text",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "torch_dtype": "float32",
    "use_cache": True,
    "use_sliding_window": False,
    "video_token_id": None,
    "vision_end_token_id": 151653,
    "vision_start_token_id": 151652,
    "vision_token_id": 151654,
    "vocab_size": 152064,
}
TEXT_ENCODER_20B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "image_token_id": 151655,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "text_config": _QWEN25_TEXT,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.53.1",
    "use_cache": True,
    "use_sliding_window": False,
    "video_token_id": 151656,
    "vision_config": {
        "depth": 32,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "hidden_act": "silu",
        "hidden_size": 1280,
        "in_channels": 3,
        "in_chans": 3,
        "initializer_range": 0.02,
        "intermediate_size": 3420,
        "model_type": "qwen2_5_vl",
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "torch_dtype": "float32",
        "window_size": 112,
    },
    "vision_end_token_id": 151653,
    "vision_start_token_id": 151652,
    "vision_token_id": 151654,
    "vocab_size": 152064,
}

# Qwen3-VL-8B (Qwen-Image-2.1's text encoder), in the Qwen3-VL config.json format.
TEXT_ENCODER_21 = {
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "image_token_id": 151655,
    "model_type": "qwen3_vl",
    "text_config": {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "dtype": "bfloat16",
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 12288,
        "max_position_embeddings": 262144,
        "model_type": "qwen3_vl_text",
        "num_attention_heads": 32,
        "num_hidden_layers": 36,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
        "rope_theta": 5000000,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": 151936,
    },
    "tie_word_embeddings": False,
    "transformers_version": "4.57.0.dev0",
    "video_token_id": 151656,
    "vision_config": {
        "deepstack_visual_indexes": [8, 16, 24],
        "depth": 27,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "in_channels": 3,
        "initializer_range": 0.02,
        "intermediate_size": 4304,
        "model_type": "qwen3_vl",
        "num_heads": 16,
        "num_position_embeddings": 2304,
        "out_hidden_size": 4096,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "vision_end_token_id": 151653,
    "vision_start_token_id": 151652,
}

PREPROCESSOR_QWEN2VL = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "Qwen2VLImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_pixels": 12845056,
    "merge_size": 2,
    "min_pixels": 3136,
    "patch_size": 14,
    "processor_class": "Qwen2VLProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 12845056, "shortest_edge": 3136},
    "temporal_patch_size": 2,
}

PREPROCESSOR_QWEN3VL = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "Qwen2VLImageProcessorFast",
    "image_std": [0.5, 0.5, 0.5],
    "merge_size": 2,
    "patch_size": 16,
    "processor_class": "Qwen3VLProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 16777216, "shortest_edge": 65536},
    "temporal_patch_size": 2,
}

# Special tokens from id 151643 on, in order (Qwen2.5 ends at <|file_sep|>; Qwen3 adds the last four).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
SPECIAL_TOKENS_QWEN3 = [*SPECIAL_TOKENS, "<tool_response>", "</tool_response>", "<think>", "</think>"]

# Lightning LoRAs: rank 64, alpha 8 (`.alpha` tensors in the file; a public sglang issue read them from
# lightx2v/Qwen-Image-2512-Lightning), kohya-style keys without prefix: `transformer_blocks.N.<module>.lora_down.weight`,
# `.lora_up.weight`, `.alpha` (the keys a public UI checks to recognise a Qwen-Image LoRA). 12 modules per block
# (720 LoRA layers in 60 blocks; 1.7 GB in fp32 at rank 64 matches these modules exactly).
LORA_RANK = 64
LORA_ALPHA = 8.0
LORA_MODULES = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2",
)  # fmt: skip


def deep(d: dict) -> dict:
    return copy.deepcopy(d)
