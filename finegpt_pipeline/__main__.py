from finegpt_pipeline.cli import main

raise SystemExit(main())
