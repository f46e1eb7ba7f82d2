//! Parser for ffmpeg's `-progress pipe:1` output: `key=value` lines grouped into blocks that
//! end with `progress=continue` or `progress=end`.

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressBlock {
    pub frame: Option<u64>,
    pub fps: Option<f64>,
    pub out_time_us: Option<i64>,
    pub speed: Option<f64>,
    /// True on the last block ffmpeg writes.
    pub end: bool,
}

/// Accumulates lines until a block is complete.
#[derive(Debug, Default)]
pub struct ProgressParser {
    current: ProgressBlock,
}

impl ProgressParser {
    /// Feeds one line; returns a finished block when the line closes one.
    pub fn push_line(&mut self, line: &str) -> Option<ProgressBlock> {
        let (key, value) = line.trim().split_once('=')?;
        let value = value.trim();
        match key {
            "frame" => self.current.frame = value.parse().ok(),
            "fps" => self.current.fps = value.parse().ok(),
            // ffmpeg 5.1 writes microseconds under both names; prefer the explicit one.
            "out_time_us" | "out_time_ms" => {
                if let Ok(v) = value.parse() {
                    self.current.out_time_us = Some(v);
                }
            }
            "speed" => self.current.speed = value.trim_end_matches('x').trim().parse().ok(),
            "progress" => {
                let mut block = std::mem::take(&mut self.current);
                block.end = value == "end";
                return Some(block);
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_as_ffmpeg_writes_them() {
        let text = "frame=10\nfps=5.00\nout_time_us=400000\nspeed=N/A\nprogress=continue\n\
                    frame=20\nfps=9.5\nout_time_us=800000\nspeed=1.5x\nprogress=end\n";
        let mut p = ProgressParser::default();
        let blocks: Vec<_> = text.lines().filter_map(|l| p.push_line(l)).collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].frame, Some(10));
        assert_eq!(blocks[0].speed, None);
        assert!(!blocks[0].end);
        assert_eq!(blocks[1].speed, Some(1.5));
        assert!(blocks[1].end);
    }
}
