"""The baseline the image_folder experiment is measured against: a plain PyTorch loop, no framework.

Same network as ``experiment=image_folder`` (the framework's ``simple_cnn`` backbone with its MLP
head), same image size and epochs, on the same pre-split folders; torchvision's ImageFolder, random
horizontal flips, Adam, cross entropy, the last epoch's weights tested.

    PYTHONPATH=. python docs/baselines/plain_classification_loop.py /work/realdata/gender_split
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from pipeline.modules.backbones import create_backbone
from pipeline.trainers.classification import MultiHeadClassifier

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def loaders(root: str, size: int, batch_size: int) -> tuple[DataLoader, DataLoader, list[str]]:
    """Train and test loaders of ``root/train`` and ``root/test`` (class folders)."""
    evaluate = [transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    train_set = datasets.ImageFolder(f"{root}/train", transforms.Compose([transforms.RandomHorizontalFlip(), *evaluate]))
    test_set = datasets.ImageFolder(f"{root}/test", transforms.Compose(evaluate))
    return (DataLoader(train_set, batch_size, shuffle=True, num_workers=2),
            DataLoader(test_set, batch_size, num_workers=2), train_set.classes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train_loader, test_loader, classes = loaders(args.root, args.size, args.batch_size)
    model = MultiHeadClassifier(create_backbone("simple_cnn", False, None), {"label": len(classes)}, [128], 0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(images)["label"], labels)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch} loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in test_loader:
            correct += int((model(images)["label"].argmax(1) == labels).sum())
            total += len(labels)
    print(f"test accuracy {correct / total:.4f} on {total} images ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
