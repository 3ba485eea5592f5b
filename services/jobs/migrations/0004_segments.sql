-- Which segments of each fanned-out stage (tts) have finished:
-- {"<stage index>": "<bit mask, hex>"}, bit i for segment i. A stage's entry
-- goes when every segment is done.
ALTER TABLE jobs ADD COLUMN segments jsonb NOT NULL DEFAULT '{}';
