//! The output container, chosen by the output file's extension, and what each one takes.

use serde::{Deserialize, Serialize};

/// Output container, chosen by the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    Mp4,
    Mov,
    Matroska,
}

impl Container {
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "mp4" | "m4v" => Some(Container::Mp4),
            "mov" => Some(Container::Mov),
            "mkv" => Some(Container::Matroska),
            _ => None,
        }
    }

    /// ffmpeg muxer name.
    pub fn muxer(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Mov => "mov",
            Container::Matroska => "matroska",
        }
    }

    /// Extension of the encoded-audio intermediate that this container can take by stream copy.
    pub fn audio_intermediate_ext(self) -> &'static str {
        match self {
            Container::Mp4 | Container::Mov => "m4a",
            Container::Matroska => "mka",
        }
    }
}
