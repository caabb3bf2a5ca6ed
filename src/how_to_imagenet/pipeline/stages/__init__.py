"""One module per stage, each a small CLI (`run`) around its work; run through
`python -m how_to_imagenet.pipeline <stage>`. A stage with a stamp also says which inputs it runs on
(`inputs`) and whether its recorded outputs are still there (`present`): the stage itself,
`status` and `check` decide freshness with those and `stamps.state`."""
