"""What iteration i of a run does, from (config, i) alone: its learning rate, its images, its
flips, its pasted instances and its seeds (lesson 12).

Reproducibility. Every random choice of iteration i is derived from (seed, i, rank) alone:
which images form the batch (a per-epoch permutation seeded by (seed, epoch), grouped so that a
batch holds landscape or portrait photos only), which are flipped,
which instances are pasted from one onto another, and the model's own draws: the input size of
each image under scale jitter, the sampling of anchors and RoIs (the global torch RNG, re-seeded
at the start of the iteration by the loop). Nothing depends on what ran before, so a run resumed from the
checkpoint of iteration k repeats the losses of an uninterrupted run exactly (on the CPU).

Learning rate at 0-based iteration i (the step that produces log record i + 1):

    lr(i) = lr * gamma ** (number of lr_steps <= i) * warm(i)
    warm(i) = warmup_factor * (1 - i / warmup_iters) + i / warmup_iters   for i < warmup_iters, else 1
"""
import functools
import hashlib

import torch

from mrcnn_edu.engine import distributed
from mrcnn_edu.model.transforms import RandomCopyPaste, RandomHorizontalFlip


def lr_at(iteration, config):
    """Learning rate of 0-based `iteration`: linear warm-up, then x lr_gamma at each lr_step."""
    factor = config.lr_gamma ** sum(iteration >= step for step in config.lr_steps)
    if iteration < config.warmup_iters:
        alpha = iteration / config.warmup_iters
        factor *= config.warmup_factor * (1 - alpha) + alpha
    return config.lr * factor


def iteration_seed(seed, iteration, rank=0, purpose="model"):
    """A 56-bit seed that depends only on its arguments (a hash, so nearby inputs decorrelate)."""
    digest = hashlib.sha256(f"{seed}:{iteration}:{rank}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def iteration_generator(config, iteration, info, purpose):
    """A torch.Generator for one kind of random choice of `iteration` on this rank."""
    return torch.Generator().manual_seed(iteration_seed(config.seed, iteration, info.rank, purpose))


@functools.lru_cache(maxsize=4)
def epoch_permutation(epoch, num_images, seed):
    """The order in which epoch `epoch` visits the dataset: a permutation seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(iteration_seed(seed, epoch, purpose="epoch"))
    return tuple(torch.randperm(num_images, generator=g).tolist())


@functools.lru_cache(maxsize=4)
def grouped_epoch_order(epoch, groups, images_per_step, seed):
    """Epoch `epoch`'s permutation, reordered so that every batch holds images of one group
    (`groups`: a tuple, one group id per image, e.g. landscape 0 and portrait 1).

    As torchvision's GroupedBatchSampler does: walk the permutation, keep one open batch per
    group, and emit a batch when it has images_per_step images. Then a batch is padded to the
    size of like-shaped images, not to a landscape and a portrait photo both. The first images
    complete the batch that the previous epoch left open (when images_per_step does not divide
    the number of images), and the open batches of every group close the epoch, in the
    permutation's order. With one group this is the permutation itself.
    """
    num_images = len(groups)
    permutation = epoch_permutation(epoch, num_images, seed)
    carried = (epoch * num_images) % images_per_step  # images of the straddling batch
    head = permutation[:(images_per_step - carried) % images_per_step]
    order, open_batches = list(head), {}
    for i in permutation[len(head):]:
        batch = open_batches.setdefault(groups[i], [])
        batch.append(i)
        if len(batch) == images_per_step:
            order += batch
            batch.clear()
    position = {i: k for k, i in enumerate(permutation)}
    leftovers = sorted((i for batch in open_batches.values() for i in batch), key=position.get)
    return tuple(order + leftovers)


def global_batch_indices(iteration, num_images, images_per_step, seed, groups=None):
    """Dataset indices of 0-based `iteration`'s batch over all processes.

    The data order is the concatenation of the epoch permutations (grouped by `groups`, a
    tuple of one group id per image, when given); iteration i takes positions
    [i * images_per_step, (i + 1) * images_per_step) of it, so a batch may straddle two epochs.
    """
    indices = []
    for position in range(iteration * images_per_step, (iteration + 1) * images_per_step):
        epoch, offset = divmod(position, num_images)
        order = (epoch_permutation(epoch, num_images, seed) if groups is None
                 else grouped_epoch_order(epoch, groups, images_per_step, seed))
        indices.append(order[offset])
    return indices


class IterationBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's list of dataset indices for iterations start..stop-1 (see above);
    `groups`, optional, one group id per image: batches of one group each."""

    def __init__(self, num_images, config, start, stop, info, groups=None):
        self.num_images, self.config = num_images, config
        self.start, self.stop, self.info = start, stop, info
        self.groups = None if groups is None else tuple(groups)

    def __iter__(self):
        per_step = self.config.batch_size * self.info.world_size
        for iteration in range(self.start, self.stop):
            batch = global_batch_indices(iteration, self.num_images, per_step, self.config.seed,
                                         self.groups)
            yield distributed.shard(batch, self.info)

    def __len__(self):
        return self.stop - self.start


def flip_batch(images, targets, iteration, config, info):
    """Random horizontal flips, drawn from a generator seeded by (seed, iteration, rank).

    Done here in the main process rather than in the dataset so that DataLoader workers need no
    random state and the choice is reproducible whatever num_workers is.
    """
    if config.hflip_prob <= 0:
        return images, targets
    flip = RandomHorizontalFlip(config.hflip_prob, iteration_generator(config, iteration, info,
                                                                       "flip"))
    pairs = [flip(image, target) for image, target in zip(images, targets)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def paste_batch(images, targets, iteration, config, info):
    """Copy-paste within the batch: with probability copy_paste_prob, image b gets about half the
    instances of image b + 1 (the last image takes from the first), drawn from a generator seeded
    by (seed, iteration, rank). Sources are the images as they came, before any pasting; a batch
    of one image is returned as it is.
    """
    if config.copy_paste_prob <= 0 or len(images) < 2:
        return images, targets
    paste = RandomCopyPaste(config.copy_paste_prob, iteration_generator(config, iteration, info,
                                                                        "paste"))
    sources = list(zip(images[1:] + images[:1], targets[1:] + targets[:1]))
    pairs = [paste(image, target, *source)
             for image, target, source in zip(images, targets, sources)]
    return [p[0] for p in pairs], [p[1] for p in pairs]
