//! Camera frames of any size and encoding -> the normalised [1, 3, S, S] tensor the model reads.

use std::borrow::Cow;
use std::io::Cursor;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageFormat, ImageReader, Limits, Luma, Pixel, Rgb, RgbImage, Rgba};

use crate::model::PreprocessConfig;

/// Largest side accepted for a frame, raw or compressed.
pub const MAX_SIDE: u32 = 16_384;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("unsupported encoding '{0}' (expected rgb8, bgr8, rgba8, bgra8 or mono8)")]
    UnknownEncoding(String),
    #[error("frame is {width}x{height}: both sides must be in 1..={MAX_SIDE}")]
    BadSize { width: u32, height: u32 },
    #[error("row step {step} is smaller than width {width} x {bytes_per_pixel} bytes")]
    BadStep { step: u32, width: u32, bytes_per_pixel: u32 },
    #[error("frame data is {got} bytes, step x height = {expected}")]
    BadLength { expected: usize, got: usize },
    #[error("compressed frame is not a jpeg or png")]
    UnknownFormat,
    #[error("cannot decode compressed frame: {0}")]
    Decode(String),
}

impl FrameError {
    /// A stable name per kind of problem, for counters and throttled logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownEncoding(_) => "unknown_encoding",
            Self::BadSize { .. } => "bad_size",
            Self::BadStep { .. } => "bad_step",
            Self::BadLength { .. } => "bad_length",
            Self::UnknownFormat => "unknown_format",
            Self::Decode(_) => "decode",
        }
    }
}

/// sensor_msgs/Image encodings the policy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelEncoding {
    Rgb8,
    Bgr8,
    Rgba8,
    Bgra8,
    Mono8,
}

impl PixelEncoding {
    pub fn bytes_per_pixel(self) -> u32 {
        match self {
            Self::Rgb8 | Self::Bgr8 => 3,
            Self::Rgba8 | Self::Bgra8 => 4,
            Self::Mono8 => 1,
        }
    }

    pub fn ros_name(self) -> &'static str {
        match self {
            Self::Rgb8 => "rgb8",
            Self::Bgr8 => "bgr8",
            Self::Rgba8 => "rgba8",
            Self::Bgra8 => "bgra8",
            Self::Mono8 => "mono8",
        }
    }
}

impl FromStr for PixelEncoding {
    type Err = FrameError;

    fn from_str(s: &str) -> Result<Self, FrameError> {
        Ok(match s {
            "rgb8" => Self::Rgb8,
            "bgr8" => Self::Bgr8,
            "rgba8" => Self::Rgba8,
            "bgra8" => Self::Bgra8,
            "mono8" | "8UC1" => Self::Mono8,
            other => return Err(FrameError::UnknownEncoding(other.chars().take(64).collect())),
        })
    }
}

/// An uncompressed frame as sensor_msgs/Image carries it.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub width: u32,
    pub height: u32,
    /// Bytes per row (at least width x bytes per pixel).
    pub step: u32,
    pub encoding: PixelEncoding,
    pub data: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// A tightly packed frame.
    pub fn packed(width: u32, height: u32, encoding: PixelEncoding, data: &'a [u8]) -> Self {
        Self { width, height, step: width.saturating_mul(encoding.bytes_per_pixel()), encoding, data }
    }

    /// Checks size, row step and data length against each other, without touching the pixels.
    pub fn check(&self) -> Result<(), FrameError> {
        check_size(self.width, self.height)?;
        let bpp = self.encoding.bytes_per_pixel();
        if self.step < self.width * bpp {
            return Err(FrameError::BadStep { step: self.step, width: self.width, bytes_per_pixel: bpp });
        }
        let expected = self.step as usize * self.height as usize;
        if self.data.len() != expected {
            return Err(FrameError::BadLength { expected, got: self.data.len() });
        }
        Ok(())
    }
}

/// A frame as the camera delivers it.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    Raw(RawFrame<'a>),
    /// jpeg or png bytes (sensor_msgs/CompressedImage).
    Compressed(&'a [u8]),
}

/// A frame that owns its bytes, to hand from a message callback to the inference thread.
#[derive(Debug, Clone)]
pub enum OwnedFrame {
    Raw { width: u32, height: u32, step: u32, encoding: PixelEncoding, data: Vec<u8> },
    Compressed(Vec<u8>),
}

impl OwnedFrame {
    /// A sensor_msgs/Image's fields as a checked frame; `data` moves in, it is not copied.
    pub fn raw(width: u32, height: u32, step: u32, encoding: &str, data: Vec<u8>) -> Result<Self, FrameError> {
        let encoding: PixelEncoding = encoding.parse()?;
        RawFrame { width, height, step, encoding, data: &data }.check()?;
        Ok(Self::Raw { width, height, step, encoding, data })
    }

    pub fn as_frame(&self) -> Frame<'_> {
        match self {
            Self::Raw { width, height, step, encoding, data } => {
                Frame::Raw(RawFrame { width: *width, height: *height, step: *step, encoding: *encoding, data })
            }
            Self::Compressed(data) => Frame::Compressed(data),
        }
    }
}

fn check_size(width: u32, height: u32) -> Result<(), FrameError> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(FrameError::BadSize { width, height });
    }
    Ok(())
}

/// Resizes to `size` x `size` without copying the full frame: area averaging when shrinking
/// (what a camera frame almost always needs), a triangle filter when enlarging.
fn resized<P: Pixel<Subpixel = u8> + 'static>(width: u32, height: u32, data: &[u8], size: u32) -> ImageBuffer<P, Vec<u8>> {
    let view = ImageBuffer::<P, &[u8]>::from_raw(width, height, data).expect("frame length checked");
    if width >= size && height >= size {
        image::imageops::thumbnail(&view, size, size)
    } else {
        image::imageops::resize(&view, size, size, FilterType::Triangle)
    }
}

fn swap_red_blue<P: Pixel<Subpixel = u8>>(img: &mut ImageBuffer<P, Vec<u8>>) {
    img.pixels_mut().for_each(|p| p.channels_mut().swap(0, 2));
}

/// Checks the frame's geometry and returns it resized to `size` x `size`, in RGB. Resizing is
/// per channel, so channel order and alpha are dealt with on the small image.
pub fn resize_raw(frame: &RawFrame, size: u32) -> Result<RgbImage, FrameError> {
    frame.check()?;
    let (w, h) = (frame.width, frame.height);
    let row = w * frame.encoding.bytes_per_pixel();
    // Drop row padding, if any.
    let packed: Cow<[u8]> = if frame.step == row {
        Cow::Borrowed(frame.data)
    } else {
        Cow::Owned(frame.data.chunks_exact(frame.step as usize).flat_map(|r| &r[..row as usize]).copied().collect())
    };
    Ok(match frame.encoding {
        PixelEncoding::Rgb8 => resized::<Rgb<u8>>(w, h, &packed, size),
        PixelEncoding::Bgr8 => {
            let mut img = resized::<Rgb<u8>>(w, h, &packed, size);
            swap_red_blue(&mut img);
            img
        }
        PixelEncoding::Rgba8 => DynamicImage::ImageRgba8(resized::<Rgba<u8>>(w, h, &packed, size)).to_rgb8(),
        PixelEncoding::Bgra8 => {
            let mut img = resized::<Rgba<u8>>(w, h, &packed, size);
            swap_red_blue(&mut img);
            DynamicImage::ImageRgba8(img).to_rgb8()
        }
        PixelEncoding::Mono8 => DynamicImage::ImageLuma8(resized::<Luma<u8>>(w, h, &packed, size)).to_rgb8(),
    })
}

/// Decodes a jpeg or png frame, refusing oversized images before allocating them.
pub fn decode_compressed(data: &[u8]) -> Result<RgbImage, FrameError> {
    let format = image::guess_format(data).map_err(|_| FrameError::UnknownFormat)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(FrameError::UnknownFormat);
    }
    let mut reader = ImageReader::with_format(Cursor::new(data), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| FrameError::Decode(e.to_string()))?;
    check_size(img.width(), img.height())?;
    Ok(img.to_rgb8())
}

/// Any frame, resized to `size` x `size` RGB.
pub fn resize_frame(frame: &Frame, size: u32) -> Result<RgbImage, FrameError> {
    match frame {
        Frame::Raw(raw) => resize_raw(raw, size),
        Frame::Compressed(bytes) => {
            let rgb = decode_compressed(bytes)?;
            let (w, h) = rgb.dimensions();
            Ok(resized::<Rgb<u8>>(w, h, rgb.as_raw(), size))
        }
    }
}

/// Appends the normalised channel-major (CHW) pixels of packed RGB `rgb`: `(v / 255 - mean) / std`
/// per channel. Training and inference both normalise with this.
pub fn normalise_into(rgb: &[u8], norm: &PreprocessConfig, out: &mut Vec<f32>) {
    out.reserve(rgb.len());
    for c in 0..3 {
        let (mean, std) = (norm.mean[c], norm.std[c]);
        out.extend(rgb.iter().skip(c).step_by(3).map(|&v| (v as f32 / 255.0 - mean) / std));
    }
}

/// Normalises a `size` x `size` RGB image into [1, 3, S, S].
pub fn to_tensor(img: &RgbImage, norm: &PreprocessConfig, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let mut chw = Vec::new();
    normalise_into(img.as_raw(), norm, &mut chw);
    Tensor::from_vec(chw, (1, 3, h as usize, w as usize), device)
}
