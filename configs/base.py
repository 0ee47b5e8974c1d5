"""Defaults shared by every experiment config; each config imports this and overrides fields.

Every number the code uses lives here or in an experiment config. Fields are locked
(`lock_config=True` in main.py), so a misspelt `--config.field=...` override fails loudly.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Compute dtype of activations and matmuls; parameters, optimizer state and BN stats stay float32.
  config.dtype = 'float32'

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'synthetic'
  config.dataset.data_dir = ''  # records directory; '' = the synthetic demo data's cache folder
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'val'

  config.data = ml_collections.ConfigDict()
  # Temporal sampler (data/sampling.py SAMPLERS): 'dense' (num_frames x frame_stride native
  # frames), 'pyslowfast' (num_frames x frame_stride frames at target_fps, mapped onto each
  # video's own rate), 'tsn' (num_frames segments, one frame each) or 'all_frames' (up to
  # num_frames frames, padded, with a validity mask; S2DNet).
  config.data.temporal_sampling = 'dense'
  config.data.num_frames = 8
  config.data.frame_stride = 8
  config.data.target_fps = 30.0  # 'pyslowfast': the rate frame_stride counts in
  # 'all_frames' train: a random 0..floor(n * this) frames trimmed at each end (n: the video's
  # own length after frame_stride).
  config.data.all_frames_trim_fraction = 1 / 16
  # Train crop (data/augment.py CROP_BOXES): 'short_side_jitter' (PySlowFast), 'inception'
  # (random resized crop) or 'tsm_multiscale' (TSM scales, max distortion, fixed-offset grid).
  config.data.train_crop = 'short_side_jitter'
  config.data.inception_area_range = (0.08, 1.0)
  config.data.inception_aspect_range = (3 / 4, 4 / 3)
  config.data.tsm_scales = (1.0, 0.875, 0.75, 0.66)
  config.data.tsm_max_distort = 1
  config.data.tsm_more_fix_crop = True
  config.data.crop_size = 224
  # How frames are resized, train crops and test short side alike (data/augment.py
  # RESIZE_FILTERS): 'bilinear' (PySlowFast's interpolate) or 'pil_bilinear' (Pillow's, which
  # smooths when it shrinks: TSM's transforms, the S2DNet release's).
  config.data.resize_filter = 'bilinear'
  config.data.train_min_scale = 256  # short side jitter range before the random crop
  config.data.train_max_scale = 320
  # Named augmentations applied to each train clip after its crop (data/augment.py
  # AUGMENTATIONS); () for direction-sensitive sets (SSv2, the synthetic motion demo).
  config.data.train_augmentations = ('random_flip',)
  # Train crops that need upsampling travel unresized (zero-padded to crop_size) and are resized
  # and flipped inside the jitted step (salinet_jax/inputs.py resize_crops_on_device): about a fifth
  # of the host's work per clip moves to the accelerator. False: all of it on the host (better
  # for a CPU-only run with a tiny model, where XLA's CPU gathers cost more than TF's resize).
  config.data.train_resize_on_device = True
  config.data.normalization = 'kinetics'  # applied on the accelerator (batches carry uint8)
  config.data.shuffle_buffer = 256
  # glibc keeps blocks up to this many MiB in the heap, so each video record's buffer reuses
  # pages instead of a fresh mmap (data/host_malloc.py); 0 leaves malloc's defaults.
  config.data.malloc_mmap_threshold_mib = 32
  # With it, each thread's heap hands its free top back to the kernel beyond this many MiB (0:
  # at every free): lower saves memory, and the pipeline pays in page faults (data/host_malloc.py).
  config.data.malloc_trim_threshold_mib = 32
  # How processes split the train stream: 'auto' | 'global_order' | 'files' (data/pipeline.py).
  config.data.train_sharding = 'auto'
  config.data.prefetch_batches = 2  # host batches tf.data prepares ahead
  config.data.device_prefetch = 2  # batches copied to the devices ahead of the step
  config.data.eval_num_clips = 10
  config.data.eval_num_crops = 3
  config.data.eval_short_side = 256
  config.data.eval_crop_size = 256
  # How a test crop's centre offset rounds on a half pixel: 'pyslowfast' up, 'torchvision' to
  # even (CenterCrop: the S2DNet/TSM releases).
  config.data.eval_crop_rounding = 'pyslowfast'

  config.model = ml_collections.ConfigDict()  # filled by each experiment: name + module fields
  # Rematerialisation in the backward pass: 'none' | 'elementwise' (convolution outputs and
  # BatchNorm statistics kept, the work after the convolutions recomputed) | 'blocks' (each
  # residual block of the 3D ResNets, SaliNet's backbone and NL-I3D's non-local blocks included)
  # | 'full' (the whole forward under jax.checkpoint). Less activation memory for more compute;
  # `python -m salinet_jax.bench` reports the saving.
  config.remat = 'none'
  # XLA's instruction scheduler on the CPU backend (read by main.py and the bench before JAX
  # starts): 'concurrency' (XLA's default: independent ops side by side, more buffers alive) or
  # 'memory' (fewer live buffers; the SaliNet K400 train step needs 2.6 instead of 4.4 GiB of
  # temporaries, while the R3D-18 step ran 19% slower). GPUs and TPUs ignore it.
  config.xla_cpu_scheduler = 'concurrency'
  # Which kernels run convolutions on the CPU backend (read with the scheduler): 'eigen' (XLA's
  # Eigen kernels) or 'ynnpack' (jax 0.10's default). On a 2-core AVX-512 Xeon, Eigen's were
  # faster everywhere measured: R3D-18's 3x3x3 convolution at 28^2, forward 0.010 s against 0.018
  # and input gradient 0.010 against 0.018; the R3D-18 train step 0.77 s against 0.82-0.88, the
  # SaliNet K400 one 4.98-5.12 against 5.05-5.25 s; eval of one clip, SaliNet 0.605-0.619 against
  # 0.624-0.652 s, S2DNet 0.315 against 0.333-0.347 s; with it, salinet_jax/models/fast_conv.py
  # keeps XLA's own (faster) 2D weight gradients: R3D-18 0.650 s, SaliNet 4.60-4.71 s. GPUs and
  # TPUs ignore it.
  config.xla_cpu_convolutions = 'eigen'
  # Whether LLVM unrolls the loops of XLA's CPU kernels (read with the scheduler). Off, the train
  # steps compiled 11-23% faster at the same step speed on a 2-core AVX-512 Xeon (README, "Step
  # benchmark"); it joins any `--xla_backend_extra_options` in XLA_FLAGS. GPUs and TPUs ignore it.
  config.xla_cpu_unroll_loops = False

  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'cross_entropy'
  config.loss.label_smoothing = 0.0
  # SaliNet auxiliary terms (used by 'ce_l1' and 'ce_l1_l2'; see salinet_jax/losses.py).
  config.loss.l1_weight = 1e-4  # lambda: L1 of the final saliency mask
  config.loss.gate1_weight = 1e-4  # gamma: MSE(P1, G1)
  config.loss.gate2_weight = 1e-4  # theta: MSE(P2, G2)
  config.loss.reference_per_device_batch = 1  # L1 scale: clips per GPU in the reference run
  # S2DNet's terms (used by 's2dnet'): reference S2D.DNET_SMOOTH_ALPHA, SNET_SMOOTH_ALPHA,
  # SNET_LOSS_WEIGHT.
  config.loss.dnet_label_smoothing = 0.1
  config.loss.snet_label_smoothing = 0.0
  config.loss.snet_loss_weight = 0.1

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'sgd'  # sgd | adamw
  config.optimizer.base_learning_rate = 0.1
  config.optimizer.base_batch_size = 0  # > 0: LR = base_learning_rate * batch_size / this
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.adam_b1 = 0.9
  config.optimizer.adam_b2 = 0.999
  config.optimizer.adam_eps = 1e-8
  config.optimizer.weight_decay = 1e-4
  # (regex, factor) rules over 'KIND:PATH' names (KIND norm | bias | weight), first match wins;
  # 1 (full decay) where none matches (salinet_jax/optim.py). PySlowFast: no decay on BatchNorm.
  config.optimizer.weight_decay_rules = (('^norm:', 0.0), ('', 1.0))
  # constant | cosine | warmup_cosine | steps | pyslowfast_cosine | epoch_cosine
  # (salinet_jax/optim.py; epoch_cosine is S2DNet's, set once per epoch).
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_steps = 0
  config.optimizer.warmup_epochs = 0.0  # > 0 overrides warmup_steps
  config.optimizer.warmup_start_lr = 0.0  # scaled with the batch like base_learning_rate
  config.optimizer.final_lr_fraction = 0.0
  config.optimizer.step_boundaries = (0.5, 0.75)  # 'steps': fractions of training
  config.optimizer.relative_lrs = (1.0, 0.1, 0.01)  # 'steps': LR factor in each interval
  config.optimizer.lr_multipliers = ()  # (regex, factor) rules as above; 1 where none matches
  # Regex over 'KIND:PATH' parameter names that get no update ('' = none); see README.
  config.optimizer.frozen = ''
  config.optimizer.grad_clip_norm = 0.0  # 0 = no clipping

  config.batch_size = 64  # global, over all devices and processes
  # BatchNorm statistics in training over groups of this many clips (PySlowFast: each GPU's own
  # clips, BN.NUM_SYNC_DEVICES 1), whatever the device count; 0 = the whole global batch (sync BN),
  # or with gradient accumulation the whole micro-batch.
  config.bn_group_size = 0
  # Split each global batch into this many sequential micro-batches whose gradients are averaged
  # before one update (same effective batch, less memory; BN sees micro-batches).
  config.grad_accumulation_steps = 1
  config.eval_batch_size = 16  # global, in videos (each with all its views)
  config.num_train_steps = -1  # -1: derive from num_epochs
  config.num_epochs = 20.0
  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000

  # Precise BN: recompute BatchNorm statistics over this many train batches before each
  # evaluation (PySlowFast BN.NUM_BATCHES_PRECISE); 0 turns it off.
  config.precise_bn_batches = 0

  # Persistent XLA compilation cache: a restart, resume, eval or predict run loads its compiled
  # steps from here instead of compiling them again ('' = off; JAX_COMPILATION_CACHE_DIR in the
  # environment takes precedence). Only programs that took >= 1 s to compile are stored.
  config.compilation_cache_dir = '~/.cache/salinet_jax/xla'

  # Profiler: trace this many steps from `profile_first_step` into the workdir (0 = off).
  config.profile_num_steps = 0
  config.profile_first_step = 10

  # Start a fresh run from other weights: a workdir of another run (e.g. the S2DNet warm-up stage)
  # or a checkpoint step directory (e.g. written by python -m salinet_jax.convert); 'none' trains
  # from scratch. Fine-tuning recipes set 'REQUIRED' with `source` (what to start from) and
  # `convert_command` (how to make it): they refuse to start until a checkpoint is given.
  config.init_from = ml_collections.ConfigDict()
  config.init_from.checkpoint = 'none'
  config.init_from.source = ''
  config.init_from.convert_command = ''
  config.init_from.which = 'best'  # for a workdir: 'best' | 'latest' checkpoint
  config.init_from.exclude = ''  # regex of parameter paths to keep fresh, e.g. '^head/'
  config.init_from.strict = True  # missing or unexpected tensors are errors (mis-shaped always)

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.keep_last = 3  # at least 1: a run resumes from its newest checkpoint
  config.checkpoint.keep_best = True
  # What the evaluations during training record: 'val_top1' is the top-1 on
  # config.dataset.eval_split, whatever that split is called.
  config.checkpoint.best_metric = 'val_top1'
  config.checkpoint.best_mode = 'max'
  config.checkpoint.async_save = True

  config.eval = ml_collections.ConfigDict()
  # 'latest' | 'best' | path of a checkpoint step directory. The final weights, as PySlowFast, the
  # SaliNet and S2DNet references and MMAction2 test: 'best' is chosen by the periodic
  # evaluations on the eval split, which is the split every recipe here reports.
  config.eval.checkpoint = 'latest'
  config.eval.view_reduction = 'sum'  # sum | mean | max over the views of a video
  config.eval.view_scores = 'logits'  # logits | softmax
  # Clips (videos x views) each device runs through the model per forward pass of the eval step
  # (0: its whole share of the batch at once): activation memory scales with it. Must divide
  # eval_batch_size / devices x eval_num_clips x eval_num_crops, and for predict and features
  # one video's views (windowed predict: window_batch / devices windows' views).
  config.eval.clips_per_device_forward = 0
  # Eval mode: PNGs of what the model looked at (S2DNet windows, SaliNet masks) for this many
  # videos of the first batch, in <workdir>/visualizations_<split>/.
  config.eval.num_visualizations = 0

  # Predict mode (--mode=predict): > 0 slides a window of this many seconds over each video, every
  # stride_seconds, and writes a timeline (json + PNG) of the top classes over time.
  config.predict = ml_collections.ConfigDict()
  config.predict.window_seconds = 0.0
  config.predict.stride_seconds = 1.0
  config.predict.window_batch = 8  # windows scored per step
  config.predict.timeline_classes = 5  # classes drawn in the timeline PNG
  # Predict through an export instead of the checkpoint: OUT/stablehlo, OUT/savedmodel or OUT/onnx
  # written by python -m salinet_jax.export ('' = the checkpoint; not with window_seconds).
  config.predict.exported = ''

  # Features mode (--mode=features): pooled features of the eval views, one .npy per video.
  config.features = ml_collections.ConfigDict()
  config.features.per_view = False  # True: (views, D) per video; False: the mean over views (D,)
  return config
