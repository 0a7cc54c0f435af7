//! The frame cache: every bag's episodes read once ([`crate::bag::episode`]), their frames
//! resized to the model's input size and kept in a memory-mapped file beside a JSON index, so a
//! dataset larger than memory still trains and a second run starts at once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io, DataError, Dataset, Episode};
use crate::action::ActionSpace;
use crate::bag::episode::{find_bags, read_episodes, Topics};
use crate::bag::{BagError, BagReader};

/// What the cache index records besides the frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheIndex {
    /// Bag files with sizes: the cache is rebuilt when they change.
    sources: Vec<(PathBuf, u64)>,
    image_size: usize,
    frame_period_s: f64,
    topics: Topics,
    episodes: Vec<Episode>,
    /// Camera frames in the episodes, before resampling to one per period.
    frames: usize,
    /// Per step, the bin of every action dimension.
    bins: Vec<Vec<u32>>,
    skipped: Vec<String>,
}

impl Dataset {
    /// Loads every episode under `dir`, one step per `frame_period_s`, using (or building) the
    /// frame cache in `cache_dir`.
    pub fn load(
        dir: &Path,
        cache_dir: &Path,
        image_size: usize,
        frame_period_s: f64,
        space: &ActionSpace,
        topics: &Topics,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self, DataError> {
        let bags = find_bags(dir).map_err(|e| match e {
            BagError::Io { path, source } => DataError::Io { path, source },
            other => DataError::Bag { path: dir.to_path_buf(), reason: other.to_string() },
        })?;
        let sources: Vec<(PathBuf, u64)> = bags
            .iter()
            .map(|b| BagReader::open(b).map(|r| (b.clone(), r.size())))
            .collect::<Result<_, _>>()
            .map_err(|e| DataError::Bag { path: dir.to_path_buf(), reason: e.to_string() })?;
        std::fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
        let index_path = cache_dir.join(format!("index-{image_size}.json"));
        let frames_path = cache_dir.join(format!("frames-{image_size}.u8"));
        let cached: Option<CacheIndex> =
            std::fs::read(&index_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).filter(|c: &CacheIndex| {
                c.sources == sources && c.image_size == image_size && c.frame_period_s == frame_period_s && &c.topics == topics
            });
        let index = match cached {
            Some(index) => index,
            None => {
                let index = build_cache(&sources, &frames_path, image_size, frame_period_s, space, topics, &mut progress)?;
                // Written aside and renamed, so runs sharing a cache never read a half-written one.
                let json = serde_json::to_vec(&index).expect("plain data serialises");
                let tmp = index_path.with_extension(format!("partial-{}", std::process::id()));
                std::fs::write(&tmp, json).map_err(io(&tmp))?;
                std::fs::rename(&tmp, &index_path).map_err(io(&index_path))?;
                index
            }
        };
        if index.episodes.is_empty() {
            return Err(DataError::Empty(dir.to_path_buf(), topics.image.clone()));
        }
        let file = File::open(&frames_path).map_err(io(&frames_path))?;
        // SAFETY: read-only map of a cache file only this program writes; a concurrent rewrite
        // yields wrong pixels, not undefined behaviour in code that only copies bytes out.
        let frames = unsafe { memmap2::Mmap::map(&file) }.map_err(io(&frames_path))?;
        let frame_bytes = image_size * image_size * 3;
        if frames.len() != index.bins.len() * frame_bytes {
            return Err(DataError::Cache {
                path: frames_path,
                reason: format!("holds {} bytes, expected {} frames", frames.len(), index.bins.len()),
            });
        }
        let mut episode_of = vec![0u32; index.bins.len()];
        for (e, ep) in index.episodes.iter().enumerate() {
            episode_of[ep.first..ep.first + ep.len].fill(e as u32);
        }
        Ok(Self {
            episodes: index.episodes,
            bins: index.bins,
            skipped: index.skipped,
            frames_read: index.frames,
            frame_period_s,
            episode_of,
            frames,
            image_size,
        })
    }
}

fn build_cache(
    sources: &[(PathBuf, u64)],
    frames_path: &Path,
    image_size: usize,
    frame_period_s: f64,
    space: &ActionSpace,
    topics: &Topics,
    progress: &mut impl FnMut(usize, usize),
) -> Result<CacheIndex, DataError> {
    // Per process, so concurrent runs building the same cache do not write into one file.
    let tmp = frames_path.with_extension(format!("partial-{}", std::process::id()));
    let mut out = BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
    let mut index = CacheIndex {
        sources: sources.to_vec(),
        image_size,
        frame_period_s,
        topics: topics.clone(),
        episodes: Vec::new(),
        frames: 0,
        bins: Vec::new(),
        skipped: Vec::new(),
    };
    for (n, (bag, _)) in sources.iter().enumerate() {
        progress(n, sources.len());
        let episodes = match read_episodes(bag, topics, image_size, frame_period_s, space) {
            Ok(episodes) => episodes,
            Err(reason) => {
                index.skipped.push(format!("{}: {reason}", bag.display()));
                continue;
            }
        };
        let before = index.episodes.len();
        for episode in episodes {
            index.frames += episode.frames_read;
            let first = index.bins.len();
            for frame in &episode.frames {
                out.write_all(frame).map_err(io(&tmp))?;
            }
            index.bins.extend(episode.bins);
            index.episodes.push(Episode {
                bag: bag.clone(),
                instruction: episode.instruction,
                family: episode.family,
                success: episode.success,
                terminated: episode.terminated,
                reason: episode.reason,
                first,
                len: episode.frames.len(),
            });
        }
        if index.episodes.len() == before {
            index.skipped.push(format!("{}: no complete episode (frames, instruction and outcome)", bag.display()));
        }
    }
    progress(sources.len(), sources.len());
    out.flush().map_err(io(&tmp))?;
    drop(out);
    std::fs::rename(&tmp, frames_path).map_err(io(frames_path))?;
    Ok(index)
}
