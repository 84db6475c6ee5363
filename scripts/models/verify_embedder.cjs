// Runs face-api's own FaceRecognitionNet (npm @vladmandic/face-api, tfjs CPU backend) on
// 150x150 RGB chips and prints their descriptors, the reference the ONNX rebuild is checked
// against. usage: node verify_embedder.cjs MODEL_DIR CHIPS.f32 COUNT > descriptors.json
// CHIPS.f32: COUNT x 150 x 150 x 3 float32 (HWC, 0..255).
const fs = require('fs');
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

async function main() {
  const [modelDir, chipsPath, count] = process.argv.slice(2);
  await faceapi.tf.setBackend('cpu');
  await faceapi.tf.ready();
  const manifest = JSON.parse(fs.readFileSync(`${modelDir}/face_recognition_model-weights_manifest.json`, 'utf8'));
  const weights = fs.readFileSync(`${modelDir}/face_recognition_model.bin`);
  const map = faceapi.tf.io.decodeWeights(new Uint8Array(weights).buffer, manifest.flatMap((g) => g.weights));
  faceapi.nets.faceRecognitionNet.loadFromWeightMap(map);
  const raw = fs.readFileSync(chipsPath);
  const all = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const n = Number(count);
  const out = [];
  for (let i = 0; i < n; i++) {
    const chip = faceapi.tf.tensor4d(all.subarray(i * 67500, (i + 1) * 67500), [1, 150, 150, 3]);
    out.push(Array.from(await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(chip)));
    chip.dispose();
  }
  process.stdout.write(JSON.stringify(out));
}
main().catch((e) => { console.error(e); process.exit(1); });
