"""The MDS format as mds writes it: what each sample is (`images`), which samples each worker writes
in which order (`plan`), and the bytes on disk (`encodings`, `writer`, `index`); the layout is in
README.md beside this code. Nothing here imports streaming: reading is left to an unmodified
`streaming.StreamingDataset`, and tests compare every file with streaming's own MDSWriter."""
