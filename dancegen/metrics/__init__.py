"""Evaluation metrics of the five papers (`dancegen evaluate`): image, video, no-reference, consistency, rhythm and
pose metrics, the network backbones they need, and the registry/report machinery. Nothing heavy is imported here."""
