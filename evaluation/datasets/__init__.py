"""Building keyframe datasets: scripted-expert collection (Meta-World), RLBench import, keyframe detection,
instruction embeddings, and the on-disk format (Parquet shards + manifest) training reads."""
