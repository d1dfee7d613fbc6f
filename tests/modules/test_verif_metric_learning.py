"""Tests for the metric-learning miners, triplet / quadruplet losses and the cosine identity head."""

import torch
import torch.nn.functional as F

from pipeline.modules.metric_learning import (
    CosineClassifier,
    EmbeddingNet,
    QuadrupletLoss,
    TripletLoss,
    batch_hard_triplets,
    pairwise_distances,
    quadruplet_mining,
)


def _batch(seed=0, n=24, ids=6, dim=8):
    g = torch.Generator().manual_seed(seed)
    identity = torch.randint(0, ids, (n,), generator=g)
    is_fake = torch.rand(n, generator=g) < 0.3
    return torch.randn(n, dim, generator=g), identity, is_fake


def _arg(best, candidates, dist_row):
    return best(candidates, key=lambda j: dist_row[j].item()) if candidates else -1


def test_pairwise_distances_match_cdist():
    emb, _, _ = _batch()
    dist = pairwise_distances(torch.cat([emb, emb[:1]]))
    brute = torch.stack([torch.stack([(x - y).norm() for y in emb]) for x in emb])
    torch.testing.assert_close(dist[:-1, :-1], brute)
    assert dist[0, -1] == 0 and (dist.diagonal() == 0).all()


def test_batch_hard_triplets_match_brute_force():
    for seed in range(5):
        emb, identity, _ = _batch(seed)
        dist = torch.cdist(emb, emb)
        expected = []
        for a in range(len(emb)):
            pos = [j for j in range(len(emb)) if identity[j] == identity[a] and j != a]
            neg = [j for j in range(len(emb)) if identity[j] != identity[a]]
            if pos and neg:
                expected.append((a, _arg(max, pos, dist[a]), _arg(min, neg, dist[a])))
        got = list(zip(*(t.tolist() for t in batch_hard_triplets(dist, identity)), strict=True))
        assert got == expected


def test_quadruplet_mining_matches_brute_force():
    missing_fake = False
    for seed in range(5):
        emb, identity, is_fake = _batch(seed)
        dist = torch.cdist(emb, emb)
        expected = []
        for a in range(len(emb)):
            if is_fake[a]:
                continue
            same = [j for j in range(len(emb)) if identity[j] == identity[a]]
            pos = [j for j in same if j != a and not is_fake[j]]
            neg = [j for j in range(len(emb)) if identity[j] != identity[a] and not is_fake[j]]
            fakes = [j for j in same if is_fake[j]]
            if pos:
                expected.append((a, _arg(max, pos, dist[a]), _arg(min, neg, dist[a]), _arg(min, fakes, dist[a])))
        got = list(zip(*(t.tolist() for t in quadruplet_mining(dist, identity, is_fake)), strict=True))
        assert got == expected
        missing_fake |= any(q[3] == -1 for q in expected)
    only_one_identity = quadruplet_mining(dist[:3, :3], torch.zeros(3, dtype=torch.long), torch.tensor([False, False, True]))
    missing_negative = (only_one_identity.negative == -1).all()
    assert missing_fake and missing_negative and len(only_one_identity.anchor) == 2


def test_triplet_loss_value():
    emb, identity, is_fake = _batch(1)
    normed = F.normalize(emb, dim=1)
    dist = torch.cdist(normed, normed)
    a, p, n = batch_hard_triplets(dist, identity)
    expected = F.relu(0.5 + dist[a, p] - dist[a, n]).mean()
    torch.testing.assert_close(TripletLoss(margin=0.5)(emb, identity, is_fake), expected, atol=1e-5, rtol=1e-5)


def test_quadruplet_loss_value_and_missing_terms():
    # Identity 0: real anchors 0, 1 and fake 2; identity 1: a single real image 3 (no positive).
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    identity = torch.tensor([0, 0, 0, 1])
    is_fake = torch.tensor([False, False, True, False])
    d = torch.cdist(emb, emb)
    real = (F.relu(1 + d[0, 1] - d[0, 3]) + F.relu(1 + d[1, 0] - d[1, 3])) / 2
    fake = (F.relu(1 + d[0, 1] - d[0, 2]) + F.relu(1 + d[1, 0] - d[1, 2])) / 2
    terms = QuadrupletLoss().terms(emb, identity, is_fake)
    torch.testing.assert_close(terms["real"], real, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["fake"], fake, atol=1e-5, rtol=1e-5)
    no_fakes = QuadrupletLoss().terms(emb[[0, 1, 3]], identity[[0, 1, 3]], is_fake[[0, 1, 3]])
    assert no_fakes["fake"].item() == 0.0 and no_fakes["real"].item() > 0


def test_fake_term_is_live_in_the_gradient():
    emb, identity, is_fake = _batch(2)
    grads = {}
    for lam in (0.0, 1.0):
        x = emb.clone().requires_grad_(True)
        QuadrupletLoss(lambda_fake=lam)(x, identity, is_fake).backward()
        grads[lam] = x.grad
    assert QuadrupletLoss().terms(emb, identity, is_fake)["fake"].item() > 0
    assert grads[0.0][is_fake].abs().sum() == 0  # without the fake term fakes get no gradient
    assert grads[1.0][is_fake].abs().sum() > 0
    assert not torch.allclose(grads[0.0], grads[1.0])


def test_losses_are_finite_with_duplicate_samples_and_no_pairs():
    emb = torch.ones(4, 3, requires_grad=True)
    identity, is_fake = torch.tensor([0, 0, 1, 1]), torch.tensor([False, True, False, False])
    for loss in (TripletLoss()(emb, identity), QuadrupletLoss()(emb, identity, is_fake)):
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()
    lonely = QuadrupletLoss()(emb[:1], identity[:1], is_fake[:1])
    assert lonely.item() == 0.0 and lonely.requires_grad


def test_cosine_classifier_uses_real_images_only():
    torch.manual_seed(0)
    head = CosineClassifier(8, num_classes=6, scale=10.0)
    emb, identity, is_fake = _batch(3, dim=8)
    logits = head.logits(emb)
    assert logits.shape == (24, 6) and logits.abs().max() <= 10.0 + 1e-5
    expected = F.cross_entropy(logits[~is_fake], identity[~is_fake])
    torch.testing.assert_close(head(emb, identity, is_fake), expected)
    x = emb.clone().requires_grad_(True)
    head(x, identity, is_fake).backward()
    assert x.grad[is_fake].abs().sum() == 0 and x.grad[~is_fake].abs().sum() > 0
    scaled = head.logits(emb * 7.0)
    torch.testing.assert_close(scaled, logits)  # scale-invariant: features are normalised


def test_flip_average_embeds_an_image_and_its_mirror_alike_in_eval_only():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(8))
    backbone.num_features = 8
    net = EmbeddingNet(backbone, embedding_dim=5, flip_average=True)
    images = torch.rand(3, 3, 6, 7)
    net.train()
    plain = net(images)
    assert not torch.allclose(plain, net(images.flip(-1)), atol=1e-3)  # the backbone is not mirror-symmetric
    net.eval()
    averaged = net(images)
    assert torch.allclose(averaged, net(images.flip(-1)), atol=1e-6)
    one = F.normalize(net.projection(backbone(images)), dim=1)
    mirror = F.normalize(net.projection(backbone(images.flip(-1))), dim=1)
    assert torch.allclose(averaged, F.normalize(one + mirror, dim=1), atol=1e-6)
    assert torch.allclose(averaged.norm(dim=1), torch.ones(3))


def test_cosface_margin_lowers_the_true_class_logit_by_scale_times_margin():
    torch.manual_seed(0)
    head = CosineClassifier(embedding_dim=4, num_classes=3, scale=8.0, margin=0.25)
    embeddings, identity = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    cosines = F.normalize(embeddings, dim=1) @ F.normalize(head.weight, dim=1).T
    expected_logits = 8.0 * cosines
    expected_logits[torch.arange(5), identity] -= 8.0 * 0.25
    expected = F.cross_entropy(expected_logits, identity)
    assert torch.allclose(head(embeddings, identity, torch.zeros(5, dtype=torch.bool)), expected, atol=1e-6)
    plain = CosineClassifier(embedding_dim=4, num_classes=3, scale=8.0)
    plain.weight.data.copy_(head.weight.data)
    assert head(embeddings, identity, torch.zeros(5, dtype=torch.bool)) > plain(embeddings, identity, torch.zeros(5, dtype=torch.bool))
